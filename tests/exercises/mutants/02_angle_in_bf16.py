"""The rotation computed in the input's dtype: bf16 angles p * f_i lose the position (and cos/sin their digits).

Caught by: test_apply_rope_is_a_complex_multiplication
"""

import torch

from _reference import use_solution

use_solution("02", globals())


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    angles = positions.to(x.dtype)[:, None] * freqs.to(x.dtype)[None, :]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
