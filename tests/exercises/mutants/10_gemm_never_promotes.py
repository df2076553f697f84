"""The narrow accumulator runs over all of K (scales applied to each product): nothing is promoted to FP32
every 128 elements, which is the point of the report's fix.

Caught by: test_fp8_gemm_with_a_14_bit_accumulator_is_bit_exact
"""

import torch

from _reference import use_solution

_solution = use_solution("10", globals())


def fp8_gemm(a_q, a_scale, b_q, b_scale, accumulator_bits=None):
    if accumulator_bits is None:
        return _solution.fp8_gemm(a_q, a_scale, b_q, b_scale)
    n = b_q.size(0)
    b_rows = b_scale if b_scale.size(0) == n else b_scale.repeat_interleave(128, dim=0)[:n]
    a = a_q.float() * a_scale.repeat_interleave(128, dim=1)
    b = b_q.float() * b_rows.repeat_interleave(128, dim=1)
    running = torch.zeros(a.size(0), n)
    for k in range(a.size(1)):
        running = truncate_mantissa(running + a[:, k, None] * b[None, :, k], accumulator_bits)
    return running
