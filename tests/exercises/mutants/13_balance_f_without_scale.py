"""f_i as the plain fraction of tokens (count / T), without the E / K factor that makes a balanced load 1.

Caught by: test_expert_balance_loss_by_loops, test_expert_balance_loss_pools_the_whole_batch_like_the_package
"""

import torch

from _reference import use_solution

use_solution("13", globals())


def expert_balance_loss(scores, indices, alpha):
    scores, indices = scores.reshape(-1, scores.size(-1)), indices.reshape(-1, indices.size(-1))
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=0)
    p = (scores / scores.sum(-1, keepdim=True)).mean(dim=0)
    return alpha * (picks / scores.size(0) * p).sum()
