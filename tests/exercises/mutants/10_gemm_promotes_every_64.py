"""Promotion every 64 elements of K instead of every 128 (N_C = 128 in the report).

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
    a, b = a_q.float(), b_q.float()
    out = torch.zeros(a.size(0), n)
    for start in range(0, a.size(1), 64):
        partial = torch.zeros_like(out)
        for k in range(start, start + 64):
            partial = truncate_mantissa(partial + a[:, k, None] * b[None, :, k], accumulator_bits)
        c = start // 128
        out += partial * a_scale[:, c, None] * b_rows[None, :, c]
    return out
