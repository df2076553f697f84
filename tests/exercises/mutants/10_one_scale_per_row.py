"""One scale per row over all K instead of one per 1 x 128 tile: an outlier coarsens the whole row.

Caught by: test_quantize_activations_one_scale_per_token_per_128_channels
"""

import torch

from _reference import use_solution

_solution = use_solution("10", globals())


def quantize_activations(x, group=128, amax_floor=1e-4):
    row_scale = x.float().abs().amax(dim=-1, keepdim=True).clamp(min=amax_floor) / E4M3_MAX
    q = (x.float() / row_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, row_scale.expand(*x.shape[:-1], x.size(-1) // group).contiguous()


_solution.quantize_activations = quantize_activations
