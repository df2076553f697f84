"""Chapter 02 reference solution: RoPE with YaRN in plain functions."""

import math

import torch


def rope_frequencies(dim: int, theta: float) -> torch.Tensor:
    return theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def _correction_dim(turns: float, dim: int, theta: float, original_seq_len: int) -> float:
    return dim * math.log(original_seq_len / (2 * math.pi * turns)) / (2 * math.log(theta))


def yarn_correction_range(dim, theta, original_seq_len, beta_fast, beta_slow):
    low = math.floor(_correction_dim(beta_fast, dim, theta, original_seq_len))
    high = math.ceil(_correction_dim(beta_slow, dim, theta, original_seq_len))
    return max(low, 0), min(high, dim - 1)


def yarn_frequencies(dim, theta, factor, original_seq_len, beta_fast, beta_slow):
    freqs = rope_frequencies(dim, theta)
    low, high = yarn_correction_range(dim, theta, original_seq_len, beta_fast, beta_slow)
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / max(high - low, 1e-3)).clamp(0, 1)
    return freqs / factor * ramp + freqs * (1 - ramp)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    angles = positions.float()[:, None] * freqs.float()[None, :]  # (seq, dim/2)
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    a, b = x.float()[..., 0::2], x.float()[..., 1::2]
    rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # (..., dim/2, 2)
    return rotated.flatten(-2).to(x.dtype)


def yarn_softmax_scale(qk_head_dim: int, factor: float, mscale: float) -> float:
    m = 0.1 * mscale * math.log(factor) + 1.0
    return qk_head_dim ** -0.5 * m * m
