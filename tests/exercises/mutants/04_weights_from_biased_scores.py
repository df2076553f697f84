"""The routing weights taken from the biased scores s + b (the bias must only choose the experts).

Caught by: test_gate_route_weights_ignore_the_bias, test_gate_route_matches_brute_force
"""

import torch

from _reference import use_solution

_solution = use_solution("04", globals())


def gate_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    weights, indices = _solution.gate_route(scores, bias, n_groups, topk_groups, topk, route_scale)
    biased = (scores + bias).gather(1, indices)
    return biased / biased.sum(dim=-1, keepdim=True) * route_scale, indices
