"""P_i taken as the mean raw affinity s_{i,t}, without normalising each token's scores to sum to 1.

Caught by: test_sequence_balance_loss
"""

import torch

from _reference import use_solution

use_solution("07", globals())


def sequence_balance_loss(scores, indices, alpha):
    n_experts, k, seq = scores.size(-1), indices.size(-1), scores.size(-2)
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=1)
    return alpha * (picks * n_experts / (k * seq) * scores.mean(dim=1)).sum(-1).mean()
