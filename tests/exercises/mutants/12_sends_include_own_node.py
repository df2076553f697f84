"""Tokens counted as sent over the inter-node network to their own node too.

Caught by: test_inter_node_sends_one_copy_per_node
"""

import torch

from _reference import use_solution

use_solution("12", globals())


def inter_node_sends(indices, node_of_expert, token_node, n_nodes):
    reached = torch.zeros(indices.size(0), n_nodes, dtype=torch.bool)
    reached.scatter_(1, node_of_expert[indices], True)
    sends = torch.zeros(n_nodes, n_nodes, dtype=torch.long)
    sends.index_add_(0, token_node, reached.long())
    return sends
