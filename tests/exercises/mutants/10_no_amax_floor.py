"""No floor on amax: an all-zero group gets scale 0 and 0 / 0 = NaN codes.

Caught by: test_quantize_activations_one_scale_per_token_per_128_channels
"""

import torch

from _reference import use_solution

_solution = use_solution("10", globals())


def quantize_activations(x, group=128, amax_floor=1e-4):
    groups = x.float().unflatten(-1, (-1, group))
    scale = groups.abs().amax(dim=-1) / E4M3_MAX
    q = (groups / scale[..., None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.flatten(-2), scale


_solution.quantize_activations = quantize_activations
