"""k3 with x = logp - ref_logp (the reverse direction): its expectation is no longer KL(pi || ref).

Caught by: test_k3_by_hand_and_its_expectation_is_the_kl
"""

import torch

from _reference import use_solution

use_solution("11", globals())


def k3_kl(logp, ref_logp, mask):
    x = torch.where(mask, logp - ref_logp, 0.0)
    return torch.exp(x) - x - 1
