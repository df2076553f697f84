"""Nodes taken as contiguous blocks of experts (expert e on node e // per_node), ignoring the placement given.

Caught by: test_node_limited_route_matches_brute_force
"""

import torch

from _reference import use_solution

_solution = use_solution("12", globals())


def node_limited_route(scores, bias, node_of_expert, max_nodes, topk, route_scale):
    n_nodes = int(node_of_expert.max()) + 1
    contiguous = torch.arange(scores.size(1)) // (scores.size(1) // n_nodes)
    return _solution.node_limited_route(scores, bias, contiguous, max_nodes, topk, route_scale)
