"""Depth k's loss against token i + k instead of i + k + 1 (the targets of the depth before it).

Caught by: test_compute_loss_weights_each_depth_by_lambda_over_d, test_compute_loss_matches_the_package
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("07", globals())


def compute_loss(main_logits, mtp_logits, batch, balance_losses, mtp_weight):
    def cross_entropy(logits, targets):
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    main = cross_entropy(main_logits, batch[:, 1:])
    mtp = [cross_entropy(logits, batch[:, k:-1]) for k, logits in enumerate(mtp_logits, start=1)]
    loss = main + sum(balance_losses, main.new_zeros(()))
    if mtp:
        loss = loss + mtp_weight / len(mtp) * torch.stack(mtp).sum()
    return loss, main, mtp
