"""Rotary position embedding (RoPE) with YaRN context extension.

RoPE encodes position t by rotating each pair of dimensions (2i, 2i+1) of a query or
key by the angle t * f_i, with frequencies f_i = theta^(-2i/d). The dot product of a
rotated query at t and a rotated key at s then depends only on t - s.

DeepSeek-V3 rotates only a small *decoupled* part of each head (``qk_rope_head_dim``
= 64 of 192 dims, see ``attention.py``), and pairs the dimensions **interleaved**
(x[0]+i x[1], x[2]+i x[3], ...), exactly like the released weights expect.

YaRN (Peng et al., 2023) extends the context from ``original_seq_len`` (4K) to
``max_seq_len``: frequencies that turn many times over the original context keep
their value (they encode local order), frequencies that turn less than once are
divided by ``rope_factor`` (interpolation), and those in between are blended
linearly. Because interpolation makes attention flatter, the softmax scale is
multiplied by m^2 with m = 0.1 * mscale * ln(rope_factor) + 1 (``softmax_scale``).

Official code: ``precompute_freqs_cis`` and ``apply_rotary_emb`` in
``inference/model.py``; DeepSeek-V3 report section 4.3.
"""

import math

import torch

from .config import ModelConfig


# --8<-- [start:correction]
def yarn_correction_dim(num_rotations: float, dim: int, base: float, max_seq_len: int) -> float:
    """The (fractional) pair index i whose frequency turns ``num_rotations`` times over ``max_seq_len``.

    Solves max_seq_len * base^(-2i/dim) = 2*pi*num_rotations for i.
    """
    return dim * math.log(max_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_correction_range(config: ModelConfig) -> tuple[int, int]:
    """Pair indices (low, high): below ``low`` keep f_i, above ``high`` interpolate fully (V3: 10, 23)."""
    dim, base, length = config.qk_rope_head_dim, config.rope_theta, config.original_seq_len
    low = math.floor(yarn_correction_dim(config.beta_fast, dim, base, length))
    high = math.ceil(yarn_correction_dim(config.beta_slow, dim, base, length))
    return max(low, 0), min(high, dim - 1)
# --8<-- [end:correction]


# --8<-- [start:frequencies]
def rope_frequencies(config: ModelConfig) -> torch.Tensor:
    """The rotation frequency of each dimension pair, with YaRN blending when it is on.

    Returns (qk_rope_head_dim // 2,) float32.
    """
    dim = config.qk_rope_head_dim
    freqs = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if config.uses_yarn:
        low, high = yarn_correction_range(config)
        # ramp goes 0 -> 1 between low and high; "smooth" = 1 keeps the original frequency.
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / config.rope_factor * (1 - smooth) + freqs * smooth
    return freqs
# --8<-- [end:frequencies]


# --8<-- [start:precompute]
def precompute_freqs_cis(config: ModelConfig, seq_len: int | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """exp(i * t * f_j) for every position t < seq_len (default ``max_seq_len``).

    Returns (seq_len, qk_rope_head_dim // 2) complex64.
    """
    seq_len = config.max_seq_len if seq_len is None else seq_len
    freqs = rope_frequencies(config).to(device)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), freqs)
    return torch.polar(torch.ones_like(angles), angles)
# --8<-- [end:precompute]


# --8<-- [start:rotary]
def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the last dimension of x.

    x: (batch, seq, heads, rope_dim); freqs_cis: (seq, rope_dim // 2) complex.
    Returns a tensor of x's shape and dtype. The rotation itself runs in float32.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (b, s, h, rope_dim/2)
    rotated = pairs * freqs_cis.view(1, pairs.size(1), 1, pairs.size(-1))
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
# --8<-- [end:rotary]


# --8<-- [start:softmax_scale]
def softmax_scale(config: ModelConfig) -> float:
    """1/sqrt(qk_head_dim), times m^2 when YaRN is on (V3: 0.0722 * 1.8739 = 0.1352)."""
    scale = config.qk_head_dim ** -0.5
    if config.uses_yarn:
        m = 0.1 * config.mscale * math.log(config.rope_factor) + 1.0
        scale = scale * m * m
    return scale
# --8<-- [end:softmax_scale]
