"""The checkpoint's weight_scale_inv read as its inverse: W = q / s instead of q * s.

Caught by: test_dequantize_blockwise_with_ragged_edge_blocks,
           test_dequantize_blockwise_reads_a_quantised_checkpoint_weight
"""

from _reference import use_solution

use_solution("10", globals())


def dequantize_blockwise(q, scale_inv, block=(128, 128)):
    rows, cols = q.shape
    scales = scale_inv.float().repeat_interleave(block[0], dim=0)[:rows].repeat_interleave(block[1], dim=1)[:, :cols]
    return q.float() / scales
