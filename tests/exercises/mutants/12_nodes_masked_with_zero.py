"""Experts on the dropped nodes masked with 0 instead of -inf: with negative biased scores they win.

Caught by: test_node_limited_route_matches_brute_force
"""

import torch

from _reference import use_solution

use_solution("12", globals())


def node_limited_route(scores, bias, node_of_expert, max_nodes, topk, route_scale):
    biased = scores + bias
    n_nodes = int(node_of_expert.max()) + 1
    order = torch.argsort(node_of_expert, stable=True)
    node_scores = biased[:, order].unflatten(-1, (n_nodes, -1)).topk(topk // max_nodes, dim=-1).values.sum(-1)
    kept = node_scores.topk(max_nodes, dim=-1).indices
    allowed = (node_of_expert[None, :, None] == kept[:, None, :]).any(dim=-1)
    indices = biased.masked_fill(~allowed, 0.0).topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices
