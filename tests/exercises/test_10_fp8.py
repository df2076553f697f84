"""Grades chapter 10 (FP8): chapters/10_fp8/exercise.py or solution.py.

References: loops over tokens, groups and elements written here from the official formulas
(act_quant: s = max(amax, 1e-4) / 448; weight_dequant: W = q * s[i // 128, j // 128]), and the
package's ``quantize_blockwise`` (tested against the enumerated E4M3 grid in tests/test_fp8.py).
"""

import torch

from minideepseek.fp8 import quantize_blockwise


def loop_act_quant(x: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.reshape(-1, x.size(-1)).float()
    q = torch.empty(rows.shape, dtype=torch.float8_e4m3fn)
    scale = torch.empty(rows.size(0), rows.size(1) // group)
    for t in range(rows.size(0)):
        for g in range(rows.size(1) // group):
            values = rows[t, g * group:(g + 1) * group]
            s = values.abs().max().clamp(min=1e-4) / 448.0  # float32, as in the kernel
            scale[t, g] = s
            q[t, g * group:(g + 1) * group] = (values / s).to(torch.float8_e4m3fn)
    return q.view(x.shape), scale.view(*x.shape[:-1], -1)


def test_quantize_activations_one_scale_per_token_per_128_channels(exercise):
    ex = exercise("10")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 384, generator=generator) * 4
    x[0, 1, :128] = 0.0  # an all-zero group: the 1e-4 floor keeps the scale finite
    x[1, 2, 300] = 5000.0  # an outlier only coarsens its own group
    q, scale = ex.quantize_activations(x)
    q_ref, scale_ref = loop_act_quant(x)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (2, 3, 3)
    assert torch.allclose(scale, scale_ref, rtol=1e-6, atol=0)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    assert scale[0, 1, 0].item() == torch.tensor(1e-4).div(448).item()
    assert torch.equal(scale[1, 2, :2], scale_ref[1, 2, :2])  # the outlier's neighbours keep their scale


def test_quantize_activations_round_trip_is_within_half_a_step(exercise):
    ex = exercise("10")
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    q, scale = ex.quantize_activations(x)
    x_hat = q.float() * scale.repeat_interleave(128, dim=-1)
    assert ((x_hat - x).abs() <= torch.maximum(x.abs() * 2**-4, scale.repeat_interleave(128, -1) * 2**-10)).all()
    assert (q.float().abs().amax(-1) == 448).all()  # each row's largest value lands exactly on 448


def test_quantize_activations_clamps_before_casting(exercise):
    ex = exercise("10")
    x = torch.full((1, 128), 1.0)
    x[0, 0] = 1e-20  # with the amax floor the others still scale to 448 and nothing overflows
    q, _ = ex.quantize_activations(x)
    assert torch.isfinite(q.float()).all() and q.float().abs().max() <= 448


def test_dequantize_blockwise_with_ragged_edge_blocks(exercise):
    ex = exercise("10")
    generator = torch.Generator().manual_seed(2)
    q = (torch.randn(200, 300, generator=generator) * 100).to(torch.float8_e4m3fn)
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
    ex = exercise("10")
    w = torch.randn(576, 200, generator=torch.Generator().manual_seed(3)) * 0.02  # wkv_a-like: 5 x 2 blocks
    q, scale_inv = quantize_blockwise(w)
    w_hat = ex.dequantize_blockwise(q, scale_inv)
    assert (w_hat - w).norm() / w.norm() < 0.04
    small = ex.dequantize_blockwise(q[:, :64], scale_inv[:, :1], block=(128, 64))
    assert torch.equal(small, q[:, :64].float() * scale_inv[:, :1].repeat_interleave(128, 0)[:576])
