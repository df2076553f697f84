"""Chapter 10 exercise: DeepSeek-V3's fine-grained FP8 quantisation, written as plain functions.

Fill in both functions below, then grade your work with

    minideepseek grade 10            (or: pytest tests/exercises/test_10_fp8.py --student)

Conventions (the official inference code and the published checkpoints):
* a scale is the *dequantisation* multiplier s = amax / 448, so x ~= q * s;
* E4M3 is ``torch.float8_e4m3fn`` (largest value 448). On a CPU, float8 tensors can be cast to and
  from, but not multiplied or added: do the arithmetic in float32;
* clamp to [-448, 448] *before* casting to float8: what an out-of-range cast gives (NaN or 448)
  depends on the torch version.
"""

import torch

E4M3_MAX = 448.0


def quantize_activations(x: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """1 x 128 activation quantisation (the official ``act_quant``; report section 3.3.2).

    x: (..., K) float, K a multiple of ``group``. For every token and every ``group`` consecutive
    channels: amax = the group's largest |x|, clamped to at least 1e-4; s = amax / 448;
    q = x / s, clamped to [-448, 448], cast to torch.float8_e4m3fn.
    Returns q: (..., K) float8_e4m3fn and scale: (..., K / group) float32, with
    x[..., k] ~= q[..., k] * scale[..., k // group].
    """
    raise NotImplementedError("quantize_activations: one scale per token per 128 channels")


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """The checkpoint's weight dequantisation: W[i, j] = q[i, j] * scale_inv[i // block[0], j // block[1]].

    q: (out, in) float8_e4m3fn; scale_inv: (ceil(out / block[0]), ceil(in / block[1])) float32, the
    checkpoint's ``weight_scale_inv``. out and in need not be multiples of the block: the last blocks
    are narrower. Returns W: (out, in) float32.
    """
    raise NotImplementedError("dequantize_blockwise: multiply every element by its 128 x 128 block's scale")
