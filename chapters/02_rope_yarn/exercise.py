"""Chapter 02 exercise: rotary position embedding with YaRN, in plain functions.

Grade it with ``minideepseek grade 02``.
"""

import torch


def rope_frequencies(dim: int, theta: float) -> torch.Tensor:
    """f_i = theta^(-2i/dim) for i = 0 .. dim/2 - 1 (RoFormer eq. 15). Returns (dim // 2,) float32 or float64."""
    raise NotImplementedError("theta ** (-2i / dim)")


def yarn_correction_range(dim: int, theta: float, original_seq_len: int, beta_fast: float,
                          beta_slow: float) -> tuple[int, int]:
    """The pair indices (low, high) where YaRN starts and stops blending (DeepSeek-V3: (10, 23)).

    Pair i turns L * f_i / (2 pi) times over the original context L. The boundary for r turns is the
    (fractional) i that solves L * theta^(-2i/dim) = 2 pi r. low = floor of the boundary for
    beta_fast turns, high = ceil of the boundary for beta_slow turns, clamped to [0, dim - 1].
    """
    raise NotImplementedError("solve L * theta^(-2i/dim) = 2 pi r for i, at r = beta_fast and r = beta_slow")


def yarn_frequencies(dim: int, theta: float, factor: float, original_seq_len: int, beta_fast: float,
                     beta_slow: float) -> torch.Tensor:
    """The frequencies after YaRN's blending, (dim // 2,).

    With ramp_i = clamp((i - low) / (high - low), 0, 1): f'_i = f_i / factor * ramp_i + f_i * (1 - ramp_i).
    Pairs below low keep f_i, pairs above high are divided by the factor.
    """
    raise NotImplementedError("blend f_i and f_i / factor with a linear ramp between low and high")


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate each interleaved pair (x[..., 2i], x[..., 2i+1]) of token t by the angle positions[t] * freqs[i].

    x: (batch, seq, heads, dim); positions: (seq,) integer positions; freqs: (dim // 2,).
    Returns (batch, seq, heads, dim) in x's dtype, rotated in float32:
    (a, b) -> (a cos - b sin, a sin + b cos). Use cos/sin, not complex numbers.
    """
    raise NotImplementedError("angles = positions[:, None] * freqs; rotate the even/odd pairs")


def yarn_softmax_scale(qk_head_dim: int, factor: float, mscale: float) -> float:
    """1/sqrt(qk_head_dim) times m^2, m = 0.1 * mscale * ln(factor) + 1 (DeepSeek-V3: 0.1352338)."""
    raise NotImplementedError("the attention temperature of YaRN, applied to the softmax scale")
