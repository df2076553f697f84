"""One inter-node copy per (token, expert) pair instead of one per destination node: the traffic the node-aware
two-hop dispatch (IB once, then NVLink) exists to avoid.

Caught by: test_inter_node_sends_one_copy_per_node
"""

import torch

from _reference import use_solution

use_solution("12", globals())


def inter_node_sends(indices, node_of_expert, token_node, n_nodes):
    sends = torch.zeros(n_nodes, n_nodes, dtype=torch.long)
    for t in range(indices.size(0)):
        for node in node_of_expert[indices[t]].tolist():
            if node != int(token_node[t]):
                sends[token_node[t], node] += 1
    return sends
