"""V3's sequence-wise loss (one loss per sequence, then their mean) instead of one loss over the whole batch.

Caught by: test_expert_balance_loss_by_loops, test_expert_balance_loss_pools_the_whole_batch_like_the_package
"""

import torch

from _reference import use_solution

use_solution("13", globals())


def expert_balance_loss(scores, indices, alpha):
    n_experts, k = scores.size(-1), indices.size(-1)
    seq = scores.size(-2)
    scores, indices = scores.reshape(-1, seq, n_experts), indices.reshape(-1, seq, k)
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=1)
    f = picks * n_experts / (k * seq)
    p = (scores / scores.sum(-1, keepdim=True)).mean(dim=1)
    return alpha * (f * p).sum(-1).mean()
