"""P_i as the mean raw affinity s_{i,t}, without normalising each token's scores to sum to 1.

Caught by: test_expert_balance_loss_by_loops, test_expert_balance_loss_pools_the_whole_batch_like_the_package
"""

import torch

from _reference import use_solution

use_solution("13", globals())


def expert_balance_loss(scores, indices, alpha):
    n_experts, k = scores.size(-1), indices.size(-1)
    scores, indices = scores.reshape(-1, n_experts), indices.reshape(-1, k)
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=0)
    return alpha * (picks * n_experts / (k * scores.size(0)) * scores.mean(dim=0)).sum()
