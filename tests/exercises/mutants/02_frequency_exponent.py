"""The frequency exponent without the factor 2: f_i = theta^(-i/dim) for i = 0 .. dim/2 - 1.

Caught by: test_rope_frequencies_closed_form, test_yarn_frequencies_blend
"""

import torch

from _reference import use_solution

_solution = use_solution("02", globals())


def rope_frequencies(dim: int, theta: float) -> torch.Tensor:
    return theta ** (-torch.arange(0, dim // 2, dtype=torch.float64) / dim)


_solution.rope_frequencies = rope_frequencies  # the YaRN blend builds on the same wrong frequencies
