"""w2 split by rows (like w1 and w3) and the rank outputs concatenated instead of row-parallel partial sums.

Caught by: test_tensor_parallel_mlp_sums_to_the_mlp
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("12", globals())


def tensor_parallel_mlp(x, w1, w2, w3, world_size):
    hidden = F.silu(x @ w1.T) * (x @ w3.T)  # every rank computes all the hidden units
    partials = [hidden @ w2_r.T for w2_r in w2.chunk(world_size, 0)]  # (tokens, dim / W) each
    return torch.cat(partials, dim=-1), partials
