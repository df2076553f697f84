"""The pessimistic bound taken the wrong way: max(rho A, clip(rho) A) instead of the min.

Caught by: test_clipped_objective_by_hand_and_its_gradient
"""

import torch

from _reference import use_solution

use_solution("11", globals())


def clipped_objective(logp, old_logp, advantages, mask, epsilon=0.2):
    ratio = torch.exp(torch.where(mask, logp - old_logp, 0.0))
    a = advantages.unsqueeze(1)
    return torch.where(mask, torch.maximum(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon) * a), 0.0)
