"""The chosen unbiased scores used as weights as they are (times route_scale), without dividing by their sum.

Caught by: test_gate_route_weights_ignore_the_bias, test_gate_route_matches_brute_force
"""

from _reference import use_solution

_solution = use_solution("04", globals())


def gate_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    _, indices = _solution.gate_route(scores, bias, n_groups, topk_groups, topk, route_scale)
    return scores.gather(1, indices) * route_scale, indices
