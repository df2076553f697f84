"""The weight's 128 x 128 block scales indexed by row (b_scale[n]) instead of by block (b_scale[n // 128]);
rows past the scale table wrap around.

Caught by: test_fp8_gemm_promotes_every_128_with_both_scales
"""

import torch

from _reference import use_solution

_solution = use_solution("10", globals())


def fp8_gemm(a_q, a_scale, b_q, b_scale, accumulator_bits=None):
    n = b_q.size(0)
    rows = b_scale[torch.arange(n) % b_scale.size(0)]
    return _solution.fp8_gemm(a_q, a_scale, b_q, rows, accumulator_bits)
