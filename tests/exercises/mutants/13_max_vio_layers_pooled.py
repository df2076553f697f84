"""The loads of all layers added up before the max: one MaxVio of the pooled counts, not the mean of per-layer
MaxVios (layers that overload different experts look balanced).

Caught by: test_max_violation_by_hand, test_max_violation_matches_the_package
"""

import torch

from _reference import use_solution

use_solution("13", globals())


def max_violation(loads):
    used = [load.float() for load in loads.values() if load.sum() > 0]
    if not used:
        return None
    pooled = torch.stack(used).mean(dim=0)
    return (pooled.max() / pooled.mean() - 1).item()
