"""FP8 quantisation and the FP8 matrix product, against independent references.

The references: the E4M3/E5M2 grids enumerated from their bit layouts, the official
``act_quant`` formula written out in the test, naive loops for the block layout, float64
products, and the error bounds of a 3-bit mantissa.
"""

import pytest
import torch

from minideepseek.fp8 import (E4M3_MAX, E5M2_MAX, GRANULARITIES, Fp8Tensor, dequantize_blockwise,
                              quantize, quantize_activations, quantize_blockwise)
from minideepseek.fp8_gemm import (fp8_matmul, limited_accumulator_matmul, scaled_mm, scaled_mm_unsupported_reason,
                                   simulated_matmul, truncate_mantissa)



def fp8_grid(exponent_bits: int, mantissa_bits: int, finite_top: bool) -> torch.Tensor:
    """Every non-negative finite value of a small float format, in bit-pattern order (float64).

    finite_top: E4M3 "fn" uses the top exponent for numbers (only all-ones mantissa is NaN);
    E5M2 reserves it for inf/NaN, as IEEE does.
    """
    bias = 2 ** (exponent_bits - 1) - 1
    values = []
    for e in range(2**exponent_bits):
        for m in range(2**mantissa_bits):
            top = e == 2**exponent_bits - 1
            if top and (not finite_top or m == 2**mantissa_bits - 1):
                continue
            if e == 0:
                values.append(m / 2**mantissa_bits * 2.0 ** (1 - bias))  # subnormal
            else:
                values.append((1 + m / 2**mantissa_bits) * 2.0 ** (e - bias))
    return torch.tensor(values, dtype=torch.float64)


def round_to_grid(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Round to the nearest grid value, ties to the even bit pattern (the grid is in bit order)."""
    magnitude = x.abs().double()
    upper = torch.searchsorted(grid, magnitude).clamp(max=grid.numel() - 1)
    lower = (upper - 1).clamp(min=0)
    below, above = magnitude - grid[lower], grid[upper] - magnitude
    pick_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    return torch.where(pick_upper, grid[upper], grid[lower]) * x.sign()


E4M3_GRID = fp8_grid(4, 3, finite_top=True)
E5M2_GRID = fp8_grid(5, 2, finite_top=False)


def test_enumerated_grids_have_the_published_ranges():
    assert E4M3_GRID.max() == 448 == E4M3_MAX and E4M3_GRID[1] == 2.0**-9
    assert E5M2_GRID.max() == 57344 == E5M2_MAX and E5M2_GRID[1] == 2.0**-16
    assert E4M3_GRID.numel() == 127 and E5M2_GRID.numel() == 124  # 0 and the positive finite codes


@pytest.mark.parametrize("dtype, grid", [(torch.float8_e4m3fn, E4M3_GRID), (torch.float8_e5m2, E5M2_GRID)])
def test_quantize_rounds_to_nearest_representable_value(dtype, grid):
    generator = torch.Generator().manual_seed(0)
    fmax = grid.max().item()
    midpoints = (grid[1:] + grid[:-1]) / 2  # exact ties: round-half-to-even must decide
    values = torch.cat([(torch.rand(4000, generator=generator, dtype=torch.float64) * 2 - 1) * fmax,
                        midpoints, -midpoints, grid]).float()
    # One group per row, each row's largest magnitude fmax: the scale is exactly 1, q is plain rounding.
    x = torch.stack([values, torch.full_like(values, fmax)], dim=1)
    q = quantize(x, (1, None), dtype)
    assert torch.equal(q.scale, torch.ones_like(q.scale))
    assert torch.equal(q.data[:, 0].double(), round_to_grid(values.double(), grid))


def test_rounding_examples_from_the_format_table():
    x = torch.tensor([300.0, 1e-3, 1e-4])
    assert x.to(torch.float8_e4m3fn).float().tolist() == [288.0, 2.0**-9, 0.0]
    assert torch.tensor([300.0]).to(torch.float8_e5m2).item() == 320.0


def test_quantize_never_overflows_or_produces_nan():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 512, generator=generator) * torch.logspace(-6, 6, 512)
    for scale_fmt in (None, "ue8m0"):
        for granularity in GRANULARITIES.values():
            q = quantize(x, granularity, scale_fmt=scale_fmt).data.float()
            assert torch.isfinite(q).all() and q.abs().max() <= E4M3_MAX


def test_blockwise_scale_shape_and_edge_blocks():
    generator = torch.Generator().manual_seed(2)
    w = torch.randn(576, 200, generator=generator)  # wkv_a's 576 rows: 4 full row blocks + 64 rows
    q, scale_inv = quantize_blockwise(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (576, 200)
    assert scale_inv.dtype == torch.float32 and scale_inv.shape == (5, 2)
    for i in range(5):  # every block, the ragged ones included, is scaled by its own max
        for j in range(2):
            block = w[128 * i:128 * (i + 1), 128 * j:128 * (j + 1)]
            assert scale_inv[i, j] == pytest.approx(block.abs().max().item() / 448, rel=1e-6)


def test_dequantize_blockwise_is_the_checkpoint_formula():
    generator = torch.Generator().manual_seed(3)
    q = (torch.randn(300, 260, generator=generator) * 50).to(torch.float8_e4m3fn)
    scale_inv = torch.rand(3, 3, generator=generator) + 0.5
    w = dequantize_blockwise(q, scale_inv)
    for i, j in [(0, 0), (127, 128), (128, 127), (299, 259), (200, 5), (5, 256)]:
        assert w[i, j] == q[i, j].float() * scale_inv[i // 128, j // 128]
    with pytest.raises(ValueError, match=r"scale has shape \(3, 2\), expected \(3, 3\)"):
        dequantize_blockwise(q, scale_inv[:, :2])


@pytest.mark.parametrize("shape", [(256, 384), (576, 200), (130, 1000)])
def test_round_trip_error_is_within_half_an_e4m3_step(shape):
    generator = torch.Generator().manual_seed(4)
    w = torch.randn(shape, generator=generator) * torch.rand(shape[1], generator=generator) * 3
    q, scale_inv = quantize_blockwise(w)
    w_hat = dequantize_blockwise(q, scale_inv)
    scale = scale_inv.repeat_interleave(128, 0)[:shape[0]].repeat_interleave(128, 1)[:, :shape[1]]
    # Normal range: half a step of a 3-bit mantissa, 2^-4 relative. Subnormal range: half of 2^-9, absolute.
    bound = torch.maximum(w.abs() * 2**-4, scale * 2**-10)
    assert ((w_hat - w).abs() <= bound * (1 + 1e-6)).all()
    for i in range(0, shape[0], 128):  # and so is every block's relative error
        for j in range(0, shape[1], 128):
            block = (slice(i, i + 128), slice(j, j + 128))
            assert (w_hat - w)[block].norm() <= 2**-4 * w[block].norm()


def test_all_zero_block_gets_a_finite_scale():
    w = torch.zeros(256, 256)
    w[:128, :128] = torch.randn(128, 128)
    q, scale_inv = quantize_blockwise(w)
    assert torch.isfinite(scale_inv).all() and (scale_inv > 0).all()
    assert torch.equal(dequantize_blockwise(q, scale_inv)[128:], torch.zeros(128, 256))


def test_ue8m0_scales_are_powers_of_two_rounded_up():
    generator = torch.Generator().manual_seed(5)
    w = torch.randn(384, 256, generator=generator) * 7
    q, scale_inv = quantize_blockwise(w, scale_fmt="ue8m0")
    mantissa, _ = torch.frexp(scale_inv)
    assert torch.all(mantissa == 0.5)  # exactly 2^k
    _, plain = quantize_blockwise(w)
    assert torch.all(scale_inv >= plain) and torch.all(scale_inv < 2 * plain)
    assert q.float().abs().max() <= E4M3_MAX


def official_act_quant(x: torch.Tensor, scale_fmt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official kernel's formula, one 128-wide group at a time."""
    groups = x.float().unflatten(-1, (-1, 128))
    s = groups.abs().amax(-1).clamp(min=1e-4) / 448.0
    if scale_fmt == "ue8m0":
        s = torch.exp2(torch.ceil(torch.log2(s)))
    return (groups / s[..., None]).to(torch.float8_e4m3fn).flatten(-2), s


@pytest.mark.parametrize("scale_fmt", [None, "ue8m0"])
def test_quantize_activations_is_the_official_act_quant(scale_fmt):
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 384, generator=generator)
    x[1, 2, 128:256] = 0.0  # an all-zero group hits the 1e-4 amax floor
    x[0, 0, :7] *= 1000  # an outlier only damages its own group
    q, scale = quantize_activations(x, scale_fmt=scale_fmt)
    q_ref, scale_ref = official_act_quant(x, scale_fmt)
    assert q.shape == x.shape and scale.shape == (2, 5, 3)
    assert torch.equal(scale, scale_ref) and torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


def test_quantize_activations_ragged_last_group():
    x = torch.randn(3, 200)
    _, scale = quantize_activations(x)
    assert scale.shape == (3, 2)
    assert scale[:, 1] == pytest.approx((x[:, 128:].abs().amax(-1) / 448).tolist(), rel=1e-6)


def test_granularity_ordering_with_outlier_channels():
    """Table 7.2 of the notes: with 1e4x channel outliers, 1x128 < per-row < per-tensor on the other values."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(256, 2048, generator=generator)
    outliers = torch.randperm(2048, generator=generator)[:8]
    x[:, outliers] *= 1e4
    ordinary = torch.ones(2048, dtype=torch.bool)
    ordinary[outliers] = False

    def error(granularity):
        e = quantize(x, GRANULARITIES[granularity]).dequantize() - x
        return (e[:, ordinary].norm() / x[:, ordinary].norm()).item()

    assert error("1x128") < error("per-row") < error("per-tensor")
    assert error("1x128") < 0.035 < error("per-tensor")


# --------------------------------------------------------------------------- the FP8 product
def operands(m, n, k, a_group=(1, 128), b_group=(128, 128), seed=8):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=generator)
    w = torch.randn(n, k, generator=generator) * 0.05
    return x, w, quantize(x, a_group), quantize(w, b_group)


@pytest.mark.parametrize("a_group, b_group", [((1, 128), (128, 128)), ((1, 128), (1, 128)),
                                              ((1, None), (1, None)), ((None, None), (128, 128))])
def test_simulated_matmul_is_the_float64_product_of_the_dequantised_operands(a_group, b_group):
    x, w, a, b = operands(200, 320, 576, a_group, b_group)  # ragged M, N and K
    reference = a.dequantize().double() @ b.dequantize().double().T
    out = simulated_matmul(a, b)
    assert ((out.double() - reference).norm() / reference.norm()) < 1e-6
    exact = (x.double() @ w.double().T)
    assert 0.01 < (out.double() - exact).norm() / exact.norm() < 0.06  # the FP8 error itself: a few percent


def test_simulated_matmul_rejects_groups_that_split_a_promotion_slice():
    a = quantize(torch.randn(4, 256), (1, 64))
    b = quantize(torch.randn(8, 256), (1, 128))
    with pytest.raises(ValueError, match="groups of 64 along K"):
        simulated_matmul(a, b)


def test_truncate_mantissa_keeps_the_leading_bits():
    x = torch.tensor([1 + 2.0**-20, 1 + 2.0**-13, -(1 + 2.0**-13 + 2.0**-14), 3.0], dtype=torch.float64)
    assert truncate_mantissa(x, 14).tolist() == [1.0, 1 + 2.0**-13, -(1 + 2.0**-13), 3.0]


def test_promotion_every_128_fixes_the_limited_accumulator():
    generator = torch.Generator().manual_seed(9)
    a = torch.randn(16, 4096, generator=generator).to(torch.float8_e4m3fn).double()
    b = torch.randn(16, 4096, generator=generator).to(torch.float8_e4m3fn).double()
    exact = a @ b.T

    def error(promote):
        return ((limited_accumulator_matmul(a, b, 14, promote) - exact).norm() / exact.norm()).item()

    assert error(None) > 10 * error(128)
    assert error(None) > 5e-3 and error(128) < 1e-3


def test_backend_dispatch_on_cpu():
    *_, a, b = operands(64, 96, 256)
    assert torch.equal(fp8_matmul(a, b, backend="auto"), simulated_matmul(a, b))
    assert "block-scaled _scaled_mm is not available" in scaled_mm_unsupported_reason(a, b)
    with pytest.raises(RuntimeError, match="use backend='simulated'"):
        fp8_matmul(a, b, backend="scaled_mm")
    with pytest.raises(ValueError, match="backend must be one of"):
        fp8_matmul(a, b, backend="cuda")
    with pytest.raises(ValueError, match="same K"):
        simulated_matmul(a, Fp8Tensor(b.data[:, :128], b.scale[:, :1], b.group))


def cpu_scaled_mm_works() -> bool:
    try:
        one = torch.ones(16, 16).to(torch.float8_e4m3fn)
        torch._scaled_mm(one, one.t(), torch.ones(16, 1), torch.ones(1, 16), out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError):
        return False


@pytest.mark.skipif(not cpu_scaled_mm_works(), reason="this torch has no CPU torch._scaled_mm")
@pytest.mark.parametrize("group", [(1, None), (None, None)])
def test_scaled_mm_layouts_on_the_cpu_reference_implementation(group):
    *_, a, b = operands(48, 64, 256, group, group)
    out = scaled_mm(a, b, torch.float32)
    reference = simulated_matmul(a, b)
    assert (out - reference).norm() / reference.norm() < 1e-2  # the hardware path writes bf16


@pytest.mark.fp8
@pytest.mark.parametrize("k", [512, 640, 2048])
@pytest.mark.parametrize("a_group, b_group", [((1, 128), (128, 128)), ((1, 128), (1, 128)),
                                              ((1, None), (1, None)), ((None, None), (None, None))])
def test_scaled_mm_matches_the_simulation_on_the_gpu(k, a_group, b_group):
    x, w, _, _ = operands(256, 384, k)
    a, b = quantize(x.cuda(), a_group), quantize(w.cuda(), b_group)
    reference = simulated_matmul(a, b)
    out = fp8_matmul(a, b, backend="auto")  # K=640 blockwise: correct on the hardware, or simulated
    assert (out - reference).norm() / reference.norm() < 1e-2
    if scaled_mm_unsupported_reason(a, b) is None:
        hardware = scaled_mm(a, b, torch.float32)
        assert (hardware - reference).norm() / reference.norm() < 1e-2
