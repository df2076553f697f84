"""A plain top-k over all experts by biased score: the group (node) limit ignored.

Caught by: test_gate_route_matches_brute_force
"""

from _reference import use_solution

use_solution("04", globals())


def gate_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    indices = (scores + bias).topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices
