"""Chapter 10 reference solutions (see exercise.py for the task)."""

import torch

from minideepseek.fp8_gemm import truncate_mantissa

E4M3_MAX = 448.0


def quantize_activations(x: torch.Tensor, group: int = 128,
                         amax_floor: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    groups = x.float().unflatten(-1, (-1, group))  # (..., K / group, group)
    scale = groups.abs().amax(dim=-1).clamp(min=amax_floor) / E4M3_MAX  # (..., K / group)
    q = (groups / scale[..., None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.flatten(-2), scale


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128)) -> torch.Tensor:
    rows, cols = q.shape
    scales = scale_inv.float().repeat_interleave(block[0], dim=0)[:rows].repeat_interleave(block[1], dim=1)[:, :cols]
    return q.float() * scales


def fp8_gemm(a_q: torch.Tensor, a_scale: torch.Tensor, b_q: torch.Tensor, b_scale: torch.Tensor,
             accumulator_bits: int | None = None) -> torch.Tensor:
    n = b_q.size(0)
    b_rows = b_scale if b_scale.size(0) == n else b_scale.repeat_interleave(128, dim=0)[:n]  # (N, K / 128)
    a, b = a_q.float(), b_q.float()  # every FP8 value is exact in float32
    out = torch.zeros(a.size(0), n)
    for c in range(a.size(1) // 128):
        ks = range(128 * c, 128 * (c + 1))
        if accumulator_bits is None:
            partial = a[:, ks.start:ks.stop] @ b[:, ks.start:ks.stop].T  # the tensor cores
        else:
            partial = torch.zeros_like(out)
            for k in ks:
                partial = truncate_mantissa(partial + a[:, k, None] * b[None, :, k], accumulator_bits)
        out += partial * a_scale[:, c, None] * b_rows[None, :, c]  # promotion: FP32, with both scales
    return out


def fp8_linear_backward(dy: torch.Tensor, x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor,
                        w_scale: torch.Tensor, gemm=None) -> tuple[torch.Tensor, torch.Tensor]:
    gemm = gemm or fp8_gemm
    # Dgrad: contract over the output channels; W^T's 128 x 128 blocks are W's, transposed.
    dy_q, dy_scale = quantize_activations(dy, amax_floor=1e-12)
    dx = gemm(dy_q, dy_scale, w_q.t(), w_scale.t())
    # Wgrad: contract over the tokens; both operands re-tiled into 1 x 128 tiles along the tokens.
    dyt_q, dyt_scale = quantize_activations(dy.t(), amax_floor=1e-12)
    x = x_q.float() * x_scale.repeat_interleave(128, dim=-1)  # the cached FP8 input, dequantised
    xt_q, xt_scale = quantize_activations(x.t(), amax_floor=1e-12)
    dw = gemm(dyt_q, dyt_scale, xt_q, xt_scale)
    return dx, dw
