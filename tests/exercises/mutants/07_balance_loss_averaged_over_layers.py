"""The MoE layers' balance losses averaged instead of summed (each layer has its own loss term).

Caught by: test_compute_loss_weights_each_depth_by_lambda_over_d, test_compute_loss_matches_the_package
"""

import torch

from _reference import use_solution

_solution = use_solution("07", globals())


def compute_loss(main_logits, mtp_logits, batch, balance_losses, mtp_weight):
    balance = [torch.stack(balance_losses).mean()] if balance_losses else []
    return _solution.compute_loss(main_logits, mtp_logits, batch, balance, mtp_weight)
