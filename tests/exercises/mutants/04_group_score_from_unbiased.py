"""Groups scored from the UNBIASED scores (the bias must take part in every choice, groups included).

Caught by: test_gate_route_matches_brute_force
"""

import torch

from _reference import use_solution

use_solution("04", globals())


def gate_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    biased = scores + bias
    group_scores = scores.unflatten(-1, (n_groups, -1)).topk(2, dim=-1).values.sum(dim=-1)
    kept = group_scores.topk(topk_groups, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
    allowed = biased.unflatten(-1, (n_groups, -1)).masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(1)
    indices = allowed.topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices
