"""The GEMM done as dequant(a) @ dequant(b)^T in one float32 product: no slices, no promotion, and the
narrow accumulator ignored.

Caught by: test_fp8_gemm_with_a_14_bit_accumulator_is_bit_exact
"""

from _reference import use_solution

use_solution("10", globals())


def fp8_gemm(a_q, a_scale, b_q, b_scale, accumulator_bits=None):
    n = b_q.size(0)
    b_rows = b_scale if b_scale.size(0) == n else b_scale.repeat_interleave(128, dim=0)[:n]
    a = a_q.float() * a_scale.repeat_interleave(128, dim=1)
    b = b_q.float() * b_rows.repeat_interleave(128, dim=1)
    return a @ b.T
