"""The Llama/NeoX pair layout (rotate_half): x_i paired with x_{i + d/2} instead of the interleaved (x_2i, x_2i+1).

Caught by: test_apply_rope_is_a_complex_multiplication
"""

import torch

from _reference import use_solution

use_solution("02", globals())


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    angles = positions.float()[:, None] * freqs.float()[None, :]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    half = x.size(-1) // 2
    a, b = x.float()[..., :half], x.float()[..., half:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).to(x.dtype)
