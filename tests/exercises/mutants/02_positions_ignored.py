"""Rotates token t by t * f_i (its index in the tensor) instead of by the position passed in: breaks decoding.

Caught by: test_apply_rope_is_a_complex_multiplication
"""

import torch

from _reference import use_solution

_solution = use_solution("02", globals())


def apply_rope(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    return _solution.apply_rope(x, torch.arange(x.size(1)), freqs)
