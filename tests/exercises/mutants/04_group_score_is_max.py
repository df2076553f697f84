"""A group scored by its single best expert (V2's max) instead of the sum of its two best biased scores.

Caught by: test_gate_route_matches_brute_force
"""

import torch

from _reference import use_solution

use_solution("04", globals())


def gate_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    biased = scores + bias
    grouped = biased.unflatten(-1, (n_groups, -1))
    group_scores = grouped.amax(dim=-1)
    kept = group_scores.topk(topk_groups, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
    allowed = grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(1)
    indices = allowed.topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices
