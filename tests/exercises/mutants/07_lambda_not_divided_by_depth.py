"""Each MTP depth weighted by lambda instead of lambda / D (the same only when D = 1).

Caught by: test_compute_loss_weights_each_depth_by_lambda_over_d, test_compute_loss_matches_the_package
"""

import torch

from _reference import use_solution

_solution = use_solution("07", globals())


def compute_loss(main_logits, mtp_logits, batch, balance_losses, mtp_weight):
    loss, main, mtp = _solution.compute_loss(main_logits, mtp_logits, batch, balance_losses, mtp_weight)
    if mtp:
        loss = loss + mtp_weight * (1 - 1 / len(mtp)) * torch.stack(mtp).sum()
    return loss, main, mtp
