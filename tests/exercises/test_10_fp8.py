"""Grades chapter 10 (FP8): chapters/10_fp8/exercise.py or solution.py.

References: loops over tokens, groups, blocks, K-slices and single products written here from the
official formulas (act_quant: s = max(amax, 1e-4) / 448; weight_dequant: W = q * s[i // 128, j // 128];
the kernel's promotion of every 128-element partial sum to FP32), the package's ``quantize_blockwise``
(tested against the enumerated E4M3 grid in tests/test_fp8.py) and the package's ``FP8LinearFunction``
(tests/test_fp8_linear.py), whose backward is the one of the report's Figure 7.
"""

import torch

from minideepseek.fp8 import ACTIVATION_AMAX_EPS, quantize, quantize_blockwise
from minideepseek.fp8_gemm import truncate_mantissa
from minideepseek.fp8_linear import RECIPES, FP8LinearFunction
from watch import Float8CastWatch

E4M3 = torch.float8_e4m3fn


def loop_act_quant(x: torch.Tensor, group: int = 128, floor: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.reshape(-1, x.size(-1)).float()
    q = torch.empty(rows.shape, dtype=E4M3)
    scale = torch.empty(rows.size(0), rows.size(1) // group)
    for t in range(rows.size(0)):
        for g in range(rows.size(1) // group):
            values = rows[t, g * group:(g + 1) * group]
            s = values.abs().max().clamp(min=floor) / 448.0  # float32, as in the kernel
            scale[t, g] = s
            q[t, g * group:(g + 1) * group] = (values / s).clamp(-448, 448).to(E4M3)
    return q.view(x.shape), scale.view(*x.shape[:-1], -1)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_quantize_activations_one_scale_per_token_per_128_channels(exercise):
    """Each row gets one scale s = max(amax, 1e-4) / 448 per 128 consecutive channels and q = x / s in E4M3,
    bit for bit as a loop over rows and groups: an all-zero group must not divide by zero.
    Reread: The equations"""
    ex = exercise("10")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 384, generator=generator) * 4
    x[0, 1, :128] = 0.0  # an all-zero group: the 1e-4 floor keeps the scale finite
    x[1, 2, 300] = 5000.0  # an outlier only coarsens its own group
    q, scale = ex.quantize_activations(x)
    q_ref, scale_ref = loop_act_quant(x)
    assert q.dtype == E4M3 and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (2, 3, 3)
    assert torch.allclose(scale, scale_ref, rtol=1e-6, atol=0)
    assert same_bits(q, q_ref)
    assert scale[0, 1, 0].item() == torch.tensor(1e-4).div(448).item()
    assert torch.equal(scale[1, 2, :2], scale_ref[1, 2, :2])  # the outlier's neighbours keep their scale


def test_quantize_activations_round_trip_is_within_half_a_step(exercise):
    """Dequantised (q * s) values must be within half an E4M3 step of x, and each row's largest value must land
    exactly on 448: the scale is amax / 448, a dequantisation multiplier, not its inverse.
    Reread: Pitfalls"""
    ex = exercise("10")
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    q, scale = ex.quantize_activations(x)
    x_hat = q.float() * scale.repeat_interleave(128, dim=-1)
    assert ((x_hat - x).abs() <= torch.maximum(x.abs() * 2**-4, scale.repeat_interleave(128, -1) * 2**-10)).all()
    assert (q.float().abs().amax(-1) == 448).all()  # each row's largest value lands exactly on 448


def test_quantize_activations_clamps_before_casting(exercise):
    """Values must be clamped to [-448, 448] BEFORE the float8 cast: in float32, x / (amax / 448) lands a hair
    above 448 for about one group in ten, and the grader watches every conversion to float8.
    Reread: Pitfalls"""
    ex = exercise("10")
    x = torch.rand(256, 1024, generator=torch.Generator().manual_seed(5)) * 20 + 0.001
    groups = x.unflatten(-1, (-1, 128))
    unclamped = groups / (groups.abs().amax(-1, keepdim=True) / 448)
    assert unclamped.max() > 448  # this input really overflows the format before the clamp
    with Float8CastWatch() as watch:
        q, scale = ex.quantize_activations(x)
    assert watch.casts > 0, "no conversion to float8 seen"
    assert q.float().abs().max() == 448 and torch.isfinite(q.float()).all()


def test_quantize_gradients_with_a_tiny_amax_floor(exercise):
    """amax_floor is the floor passed in: gradients of size 1e-7 quantised with amax_floor=1e-12 keep their
    values (the 1e-4 activation floor would flush them to zero).
    Reread: The equations"""
    ex = exercise("10")
    g = torch.randn(4, 256, generator=torch.Generator().manual_seed(6)) * 1e-7
    q, scale = ex.quantize_activations(g, amax_floor=1e-12)
    q_ref, scale_ref = loop_act_quant(g, floor=1e-12)
    assert same_bits(q, q_ref) and torch.allclose(scale, scale_ref, rtol=1e-6, atol=0)
    assert ((q.float() * scale.repeat_interleave(128, -1) - g).abs() <= g.abs() * 2**-4 + 1e-30).all()


def test_dequantize_blockwise_with_ragged_edge_blocks(exercise):
    """W[i, j] = q[i, j] * scale_inv[i // 128, j // 128] bit for bit, the last row and column blocks narrower
    (200 x 300 has 2 x 3 blocks); the scale multiplies, it is not divided by.
    Reread: Pitfalls"""
    ex = exercise("10")
    generator = torch.Generator().manual_seed(2)
    q = (torch.randn(200, 300, generator=generator) * 100).to(E4M3)
    scale_inv = torch.rand(2, 3, generator=generator) + 0.1
    w = ex.dequantize_blockwise(q, scale_inv)
    assert w.shape == (200, 300) and w.dtype == torch.float32
    expected = torch.empty(200, 300)
    for bi in range(2):  # block rows 0-127, 128-199
        for bj in range(3):  # block columns 0-127, 128-255, 256-299
            rows, cols = slice(128 * bi, 128 * (bi + 1)), slice(128 * bj, 128 * (bj + 1))
            expected[rows, cols] = q[rows, cols].float() * scale_inv[bi, bj]
    assert torch.equal(w, expected)


def test_dequantize_blockwise_reads_a_quantised_checkpoint_weight(exercise):
    """A weight quantised by the package (576 x 200, a wkv_a-like ragged shape) must come back within FP8
    error, with any block shape passed in.
    Reread: The code, next to the math"""
    ex = exercise("10")
    w = torch.randn(576, 200, generator=torch.Generator().manual_seed(3)) * 0.02  # wkv_a-like: 5 x 2 blocks
    q, scale_inv = quantize_blockwise(w)
    w_hat = ex.dequantize_blockwise(q, scale_inv)
    assert (w_hat - w).norm() / w.norm() < 0.04
    small = ex.dequantize_blockwise(q[:, :64], scale_inv[:, :1], block=(128, 64))
    assert torch.equal(small, q[:, :64].float() * scale_inv[:, :1].repeat_interleave(128, 0)[:576])


# --------------------------------------------------------------------------- the block-scaled GEMM
def random_codes(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.randn(rows, cols, generator=generator) * 60).clamp(-448, 448).to(E4M3)


def powers_of_two(shape, generator: torch.Generator) -> torch.Tensor:
    """Scales 2^-4 .. 2^3: multiplying by them is exact, so the order of the two scale products cannot matter."""
    return 2.0 ** torch.randint(-4, 4, shape, generator=generator).float()


def loop_gemm(a_q, a_scale, b_q, b_block_scale, accumulator_bits=None):
    """Equation F3 with one product at a time (vectorised over the output only), b in 128 x 128 blocks or rows."""
    a, b = a_q.float(), b_q.float()
    m, k = a.shape
    n = b.size(0)
    out = torch.zeros(m, n)
    for c in range(k // 128):
        partial = torch.zeros(m, n)
        for j in range(128 * c, 128 * (c + 1)):
            partial = partial + a[:, j, None] * b[None, :, j]
            if accumulator_bits is not None:
                partial = truncate_mantissa(partial, accumulator_bits)
        per_row = b_block_scale.size(0) == n
        scale_b = torch.stack([b_block_scale[row if per_row else row // 128, c] for row in range(n)])
        out += partial * a_scale[:, c, None] * scale_b[None, :]
    return out


def test_fp8_gemm_promotes_every_128_with_both_scales(exercise):
    """Each 128-wide slice of K is summed over the raw codes, then multiplied by the row's activation scale and
    the weight block's scale (row n reads block n // 128; 200 rows have 2 blocks) and added in float32.
    Reread: The equations"""
    ex = exercise("10")
    generator = torch.Generator().manual_seed(7)
    a_q, b_q = random_codes(5, 384, generator), random_codes(200, 384, generator)
    a_scale, b_scale = torch.rand(5, 3, generator=generator) + 0.05, torch.rand(2, 3, generator=generator) + 0.05
    out = ex.fp8_gemm(a_q, a_scale, b_q, b_scale)
    assert out.shape == (5, 200) and out.dtype == torch.float32
    expected = loop_gemm(a_q, a_scale, b_q, b_scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-3)
    # the same product with one scale per row of b (1 x 128 tiles: Wgrad's operands)
    b_rows = torch.rand(200, 3, generator=generator) + 0.05
    torch.testing.assert_close(ex.fp8_gemm(a_q, a_scale, b_q, b_rows), loop_gemm(a_q, a_scale, b_q, b_rows),
                               rtol=1e-5, atol=1e-3)


def test_fp8_gemm_with_a_14_bit_accumulator_is_bit_exact(exercise):
    """With accumulator_bits=14 each slice's partial sum is truncated after every product, in order, and
    promoted every 128 elements of K: the result must equal the product-by-product loop bit for bit.
    Reread: The equations"""
    ex = exercise("10")
    generator = torch.Generator().manual_seed(8)
    a_q, b_q = random_codes(6, 256, generator), random_codes(130, 256, generator)
    a_scale, b_scale = powers_of_two((6, 2), generator), powers_of_two((2, 2), generator)
    expected = loop_gemm(a_q, a_scale, b_q, b_scale, accumulator_bits=14)
    out = ex.fp8_gemm(a_q, a_scale, b_q, b_scale, accumulator_bits=14)
    assert torch.equal(out, expected), f"largest difference {(out - expected).abs().max().item():.3e}"
    # The promotion is what keeps the error small: the exact product differs by far less than 2^-10.
    exact = (a_q.double() * a_scale.double().repeat_interleave(128, -1)) @ (
        b_q.double() * b_scale.double().repeat_interleave(128, 0)[:130].repeat_interleave(128, -1)).T
    assert (out.double() - exact).norm() / exact.norm() < 2**-10
    # Codes with exact sums (small integers): every order of the float32 sums gives the same bits.
    small_a = torch.randint(-16, 17, (6, 256), generator=generator).float().to(E4M3)
    small_b = torch.randint(-16, 17, (130, 256), generator=generator).float().to(E4M3)
    assert torch.equal(ex.fp8_gemm(small_a, a_scale, small_b, b_scale),
                       loop_gemm(small_a, a_scale, small_b, b_scale))


# --------------------------------------------------------------------------- the FP8 linear's backward
def backward_case(seed: int = 9):
    """x: (128 tokens, 384 in), W: (256 out, 384 in), dy of gradient size; the package's FP8 forward and backward."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 384, generator=generator).requires_grad_()
    w = (torch.randn(256, 384, generator=generator) * 0.05).requires_grad_()
    dy = torch.randn(128, 256, generator=generator) * 1e-6  # gradients are small: the 1e-4 floor would erase them
    y = FP8LinearFunction.apply(x, w, RECIPES["block"], "simulated", torch.float32)
    y.backward(dy)
    x_fp8 = quantize(x.detach(), (1, 128), amax_eps=ACTIVATION_AMAX_EPS)  # what the forward cached
    w_fp8 = quantize(w.detach(), (128, 128))
    return dy, x_fp8, w_fp8, x.grad, w.grad


def test_fp8_linear_backward_matches_the_package(exercise):
    """dx = dy W and dW = dy^T x, each an FP8 block-scaled product with the scales along the contracted dimension,
    must equal the package's FP8 linear backward (gradients quantised with amax floor 1e-12, not 1e-4).
    Reread: The equations"""
    ex = exercise("10")
    dy, x_fp8, w_fp8, dx_ref, dw_ref = backward_case()
    dx, dw = ex.fp8_linear_backward(dy, x_fp8.data, x_fp8.scale, w_fp8.data, w_fp8.scale)
    assert dx.shape == (128, 384) and dw.shape == (256, 384)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-5, atol=1e-9)


def test_fp8_linear_backward_retiles_its_operands(exercise):
    """Dgrad's operands must be dy in 1 x 128 tiles along the outputs and W^T (W's codes and block scales,
    transposed); Wgrad's must be dy^T and the dequantised x^T, each re-quantised in 1 x 128 tiles along the
    tokens, bit for bit.
    Reread: The equations"""
    ex = exercise("10")
    dy, x_fp8, w_fp8, _, _ = backward_case(seed=10)
    calls = []

    def recording_gemm(a_q, a_scale, b_q, b_scale):
        calls.append((a_q, a_scale, b_q, b_scale))
        return torch.zeros(a_q.size(0), b_q.size(0))

    ex.fp8_linear_backward(dy, x_fp8.data, x_fp8.scale, w_fp8.data, w_fp8.scale, gemm=recording_gemm)
    by_shape = {tuple(call[0].shape): call for call in calls}
    assert len(calls) == 2 and set(by_shape) == {(128, 256), (256, 128)}, \
        f"expected one Dgrad (a: 128 x 256) and one Wgrad (a: 256 x 128) product, got {list(by_shape)}"
    a_q, a_scale, b_q, b_scale = by_shape[(128, 256)]  # Dgrad: contracts over the 256 outputs
    dy_q, dy_scale = loop_act_quant(dy, floor=1e-12)
    assert same_bits(a_q, dy_q) and torch.equal(a_scale, dy_scale), "Dgrad: dy in 1 x 128 tiles along out"
    assert same_bits(b_q.contiguous(), w_fp8.data.t().contiguous()) and torch.equal(b_scale, w_fp8.scale.t()), \
        "Dgrad: W^T is W's codes and block scales, transposed"
    a_q, a_scale, b_q, b_scale = by_shape[(256, 128)]  # Wgrad: contracts over the 128 tokens
    dyt_q, dyt_scale = loop_act_quant(dy.t().contiguous(), floor=1e-12)
    assert same_bits(a_q.contiguous(), dyt_q) and torch.equal(a_scale, dyt_scale), "Wgrad: dy^T tiled along tokens"
    x = x_fp8.data.float() * x_fp8.scale.repeat_interleave(128, dim=1)
    xt_q, xt_scale = loop_act_quant(x.t().contiguous(), floor=1e-12)
    assert same_bits(b_q.contiguous(), xt_q) and torch.equal(b_scale, xt_scale), \
        "Wgrad: x^T re-tiled along the tokens from the cached FP8 copy"
