"""f_i as the plain fraction of tokens (count / T), without the N_r / K_r factor that makes a balanced load 1.

Caught by: test_sequence_balance_loss
"""

import torch

from _reference import use_solution

use_solution("07", globals())


def sequence_balance_loss(scores, indices, alpha):
    seq = scores.size(-2)
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=1)
    p = (scores / scores.sum(-1, keepdim=True)).mean(dim=1)
    return alpha * (picks / seq * p).sum(-1).mean()
