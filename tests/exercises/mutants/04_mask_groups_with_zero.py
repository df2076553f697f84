"""Experts of the dropped groups masked with 0 instead of -inf (as transformers did): when every biased score
is negative, a masked expert's 0 beats every kept one.

Caught by: test_gate_route_matches_brute_force
"""

import torch

from _reference import use_solution

use_solution("04", globals())


def gate_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    biased = scores + bias
    grouped = biased.unflatten(-1, (n_groups, -1))
    group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
    kept = group_scores.topk(topk_groups, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
    allowed = grouped.masked_fill(~keep.unsqueeze(-1), 0.0).flatten(1)
    indices = allowed.topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices
