"""FP8 fine-grained quantization (DeepSeek-V3 report section 3.3).

FP8 E4M3 keeps 3 mantissa bits and a largest value of 448. One scale for a whole
tensor lets a single outlier push every other value into the few smallest codes,
so V3 scales **small tiles**: weights in 128 x 128 blocks, activations in 1 x 128
groups (one token, 128 channels).

The published checkpoints store, for every quantised weight W (out, in):

    weight            float8_e4m3fn (out, in)               Wq = W / S, rounded to E4M3
    weight_scale_inv  float32 (ceil(out/128), ceil(in/128)) S, the *dequantisation* multiplier

so that W[i, j] ~= Wq[i, j] * S[i // 128, j // 128]. Edge blocks that are narrower
than 128 (576 = 4 * 128 + 64 rows of ``wkv_a``) get their own scale like any other.
"""

import math

import torch
import torch.nn.functional as F

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
E5M2_MAX = torch.finfo(torch.float8_e5m2).max  # 57344


def _pad_to_blocks(w: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    rows, cols = w.shape
    return F.pad(w, (0, -cols % block[1], 0, -rows % block[0]))


def quantize_blockwise(w: torch.Tensor, block: tuple[int, int] = (128, 128),
                       dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a 2-D weight to FP8 with one scale per block.

    w: (out, in) float -> q: (out, in) ``dtype``, scale_inv: (ceil(out/b0), ceil(in/b1)) float32,
    with w ~= q * scale_inv broadcast over each block (the checkpoint's ``weight_scale_inv``).
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_blockwise expects a 2-D weight, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    padded = _pad_to_blocks(w.float(), block)  # zero padding never raises a block's max
    blocks = padded.unflatten(0, (-1, block[0])).unflatten(2, (-1, block[1]))  # (R, b0, C, b1)
    amax = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12)  # (R, C); all-zero blocks get a tiny scale
    scale_inv = amax / torch.finfo(dtype).max
    # Clamp before the cast: out-of-range casts are NaN or saturate depending on the torch version.
    q = (blocks / scale_inv[:, None, :, None]).clamp(-torch.finfo(dtype).max, torch.finfo(dtype).max)
    q = q.flatten(2).flatten(0, 1)[:rows, :cols].to(dtype)
    return q, scale_inv


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128),
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of ``quantize_blockwise``: W[i, j] = q[i, j] * scale_inv[i // b0, j // b1].

    q: (out, in) float8; scale_inv: (ceil(out/b0), ceil(in/b1)) -> (out, in) ``dtype``.
    """
    rows, cols = q.shape
    expected = (math.ceil(rows / block[0]), math.ceil(cols / block[1]))
    if tuple(scale_inv.shape) != expected:
        raise ValueError(f"scale_inv has shape {tuple(scale_inv.shape)}, expected {expected} for a weight of "
                         f"shape {(rows, cols)} in {block[0]}x{block[1]} blocks")
    scales = scale_inv.float().repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
    return (q.float() * scales).to(dtype)
