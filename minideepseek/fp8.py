"""FP8 fine-grained quantization (DeepSeek-V3 report section 3.3).

FP8 E4M3 keeps 3 mantissa bits and a largest value of 448. One scale for a whole
tensor lets a single outlier push every other value into the few smallest codes,
so V3 scales **small tiles**: weights in 128 x 128 blocks, activations in 1 x 128
groups (one token, 128 channels). Every group g gets its own scale, computed
online from the group's largest magnitude:

    s_g = max(amax_g, eps) / 448            the dequantisation multiplier
    q   = clamp(x / s_g, -448, 448) -> E4M3  x ~= q * s_g

The published checkpoints store, for every quantised weight W (out, in):

    weight            float8_e4m3fn (out, in)               Wq = W / S, rounded to E4M3
    weight_scale_inv  float32 (ceil(out/128), ceil(in/128)) S, the *dequantisation* multiplier

so that W[i, j] ~= Wq[i, j] * S[i // 128, j // 128]. Edge blocks that are narrower
than 128 (576 = 4 * 128 + 64 rows of ``wkv_a``) get their own scale like any other.
The official inference code calls the same tensor ``scale``; ``_scaled_mm`` also takes
dequantisation multipliers. Only Transformer Engine's ``scale`` is the reciprocal.

This module is the arithmetic of quantisation and nothing else; the matrix product
of quantised operands is in ``fp8_gemm.py`` and the trainable layer in ``fp8_linear.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
E5M2_MAX = torch.finfo(torch.float8_e5m2).max  # 57344
FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}

# Scaling granularities as group shapes over a 2-D (rows, cols) tensor; None spans the whole dimension.
# For an activation (tokens, channels): per-row is per token, "1x128" is the report's per-token
# per-128-channel tile. For a weight (out, in): "128x128" is the report's (and the checkpoint's) block.
GRANULARITIES: dict[str, tuple[int | None, int | None]] = {
    "per-tensor": (None, None),
    "per-row": (1, None),
    "1x128": (1, 128),
    "128x128": (128, 128),
}
WEIGHT_AMAX_EPS = 1e-12  # only guards the division for all-zero blocks (torchao uses the same)
ACTIVATION_AMAX_EPS = 1e-4  # the official act_quant kernel clamps amax to 1e-4


class Fp8Tensor(NamedTuple):
    """A quantised 2-D tensor: ``data * scale`` (broadcast over ``group``-shaped blocks) ~= the original.

    data: (rows, cols) float8; scale: (ceil(rows/group[0]), ceil(cols/group[1])) float32.
    """

    data: torch.Tensor
    scale: torch.Tensor
    group: tuple[int, int]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(rows, cols) in ``dtype``: every element times its group's scale."""
        return dequantize(self.data, self.scale, self.group, dtype)

    def t(self) -> Fp8Tensor:
        """The transpose, exactly: transposing data, scales and group shape together loses nothing."""
        return Fp8Tensor(self.data.t(), self.scale.t(), (self.group[1], self.group[0]))


def resolve_group(shape: tuple[int, int], group: tuple[int | None, int | None]) -> tuple[int, int]:
    """Replace ``None`` (a whole dimension) by that dimension's size (at least 1, for empty tensors)."""
    return tuple(max(size, 1) if g is None else g for size, g in zip(shape, group))


# --8<-- [start:scale]
def compute_scale(amax: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn, scale_fmt: str | None = None,
                  amax_eps: float = WEIGHT_AMAX_EPS) -> torch.Tensor:
    """The dequantisation multiplier of each group: s = max(amax, eps) / fmax.

    The clamp keeps an all-zero group (padding, a dead channel) from dividing by zero.
    ``scale_fmt="ue8m0"`` (DeepSeek-V3.1, MX formats) rounds s *up* to a power of two, so
    that x / s still fits in the range; applying it is exact, at the cost of up to one
    binade of precision.
    """
    scale = amax.float().clamp(min=amax_eps) / torch.finfo(dtype).max
    if scale_fmt == "ue8m0":
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    elif scale_fmt is not None:
        raise ValueError(f"scale_fmt must be None or 'ue8m0', got {scale_fmt!r}")
    return scale
# --8<-- [end:scale]


def _blocks(x: torch.Tensor, group: tuple[int, int]) -> torch.Tensor:
    """(rows, cols) -> (R, g0, C, g1), zero-padded at the ragged edges (zeros never raise a group's max)."""
    rows, cols = x.shape
    padded = F.pad(x, (0, -cols % group[1], 0, -rows % group[0]))
    return padded.unflatten(0, (-1, group[0])).unflatten(2, (-1, group[1]))


# --8<-- [start:quantize]
def quantize(x: torch.Tensor, group: tuple[int | None, int | None], dtype: torch.dtype = torch.float8_e4m3fn,
             scale_fmt: str | None = None, amax_eps: float = WEIGHT_AMAX_EPS) -> Fp8Tensor:
    """Quantise a 2-D tensor with one scale per ``group``-shaped block (see ``GRANULARITIES``).

    x: (rows, cols) -> Fp8Tensor(data (rows, cols) ``dtype``, scale (ceil(rows/g0), ceil(cols/g1)) float32)
    """
    if x.dim() != 2:
        raise ValueError(f"quantize expects a 2-D tensor, got shape {tuple(x.shape)}")
    if dtype not in FP8_DTYPES.values():
        raise ValueError(f"dtype must be one of {list(FP8_DTYPES.values())}, got {dtype}")
    rows, cols = x.shape
    group = resolve_group((rows, cols), group)
    blocks = _blocks(x.float(), group)  # (R, g0, C, g1)
    scale = compute_scale(blocks.abs().amax(dim=(1, 3)), dtype, scale_fmt, amax_eps)  # (R, C)
    fmax = torch.finfo(dtype).max
    # Clamp before the cast: out-of-range casts give NaN or saturate depending on the torch version.
    q = (blocks / scale[:, None, :, None]).clamp(-fmax, fmax)
    return Fp8Tensor(q.flatten(2).flatten(0, 1)[:rows, :cols].to(dtype), scale, group)


def dequantize(data: torch.Tensor, scale: torch.Tensor, group: tuple[int, int],
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x[i, j] = data[i, j] * scale[i // g0, j // g1]. data: (rows, cols) -> (rows, cols) ``dtype``"""
    rows, cols = data.shape
    expected = (math.ceil(rows / group[0]), math.ceil(cols / group[1]))
    if tuple(scale.shape) != expected:
        raise ValueError(f"scale has shape {tuple(scale.shape)}, expected {expected} for data of shape "
                         f"{(rows, cols)} in {group[0]}x{group[1]} groups")
    scales = scale.float().repeat_interleave(group[0], 0)[:rows].repeat_interleave(group[1], 1)[:, :cols]
    return (data.float() * scales).to(dtype)  # float8 has no arithmetic on CPU: multiply in fp32
# --8<-- [end:quantize]


# --------------------------------------------------------------------------- the published conventions
def quantize_blockwise(w: torch.Tensor, block: tuple[int, int] = (128, 128),
                       dtype: torch.dtype = torch.float8_e4m3fn,
                       scale_fmt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a 2-D weight to FP8 with one scale per block (the checkpoint's layout).

    w: (out, in) float -> q: (out, in) ``dtype``, scale_inv: (ceil(out/b0), ceil(in/b1)) float32,
    with w ~= q * scale_inv broadcast over each block (the checkpoint's ``weight_scale_inv``).
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_blockwise expects a 2-D weight, got shape {tuple(w.shape)}")
    q = quantize(w, block, dtype, scale_fmt, WEIGHT_AMAX_EPS)
    return q.data, q.scale


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128),
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of ``quantize_blockwise``: W[i, j] = q[i, j] * scale_inv[i // b0, j // b1].

    q: (out, in) float8; scale_inv: (ceil(out/b0), ceil(in/b1)) -> (out, in) ``dtype``.
    """
    if q.dim() != 2:
        raise ValueError(f"dequantize_blockwise expects a 2-D weight, got shape {tuple(q.shape)}")
    return dequantize(q, scale_inv, block, dtype)


# --8<-- [start:activations]
def quantize_activations(x: torch.Tensor, group: int = 128, dtype: torch.dtype = torch.float8_e4m3fn,
                         scale_fmt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``act_quant``: one scale per token per ``group`` channels (1 x 128 tiles).

    x: (..., K) -> q: (..., K) ``dtype``, scale: (..., ceil(K/group)) float32 with
    x[..., k] ~= q[..., k] * scale[..., k // group]. amax is clamped to 1e-4 as in the kernel.
    """
    flat = quantize(x.reshape(-1, x.size(-1)), (1, group), dtype, scale_fmt, ACTIVATION_AMAX_EPS)
    return flat.data.view(x.shape), flat.scale.view(*x.shape[:-1], -1)
# --8<-- [end:activations]
