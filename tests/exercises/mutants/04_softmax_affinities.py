"""V2's softmax affinities in the layer instead of V3's sigmoid.

Caught by: test_moe_forward_naive_matches_the_package
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("04", globals())


def moe_forward_naive(x, gate_weight, gate_bias, experts, shared_expert, config):
    scores = torch.softmax(F.linear(x.float(), gate_weight.float()), dim=-1)
    weights, indices = gate_route(scores, gate_bias, config.n_expert_groups, config.n_limited_groups,
                                  config.n_activated_experts, config.route_scale)
    out = swiglu(x, *shared_expert)
    for t in range(x.size(0)):
        for weight, expert in zip(weights[t], indices[t].tolist()):
            out[t] += weight.to(x.dtype) * swiglu(x[t], *experts[expert])
    return out
