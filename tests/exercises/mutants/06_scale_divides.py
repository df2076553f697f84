"""weight_scale_inv read as a quantisation scale: W = Q / S instead of Q * S.

Caught by: test_dequantize_fp8_with_partial_blocks
"""

from _reference import use_solution

use_solution("06", globals())


def dequantize_fp8(q, scale_inv, block=128):
    rows, cols = q.shape
    scales = scale_inv.repeat_interleave(block, dim=0)[:rows].repeat_interleave(block, dim=1)[:, :cols]
    return q.float() / scales
