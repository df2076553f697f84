"""The padding mask applied after the exponential: exp(inf) * 0 = nan leaks into the gradient.

Caught by: test_clipped_objective_ignores_padding_even_inf_and_nan
"""

import torch

from _reference import use_solution

use_solution("11", globals())


def clipped_objective(logp, old_logp, advantages, mask, epsilon=0.2):
    ratio = torch.exp(logp - old_logp)
    a = advantages.unsqueeze(1)
    objective = torch.minimum(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon) * a)
    return torch.where(mask, objective, 0.0)
