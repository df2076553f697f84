"""The objective averaged over all real tokens of the batch (DAPO's token mean) instead of per sequence, then
over sequences (GRPO eq. 3).

Caught by: test_grpo_objective_matches_the_equation_written_as_loops
"""

import torch

from _reference import use_solution

use_solution("11", globals())


def grpo_objective(logp, old_logp, ref_logp, advantages, mask, epsilon=0.2, beta=0.04):
    per_token = clipped_objective(logp, old_logp, advantages, mask, epsilon) - beta * k3_kl(logp, ref_logp, mask)
    return torch.where(mask, per_token, 0.0).sum() / mask.sum()
