"""The population std (divide by G) instead of the unbiased one (G - 1) in the advantages.

Caught by: test_group_advantages_by_hand
"""

from _reference import use_solution

use_solution("11", globals())


def group_advantages(rewards, group_size, normalise_std=True, eps=1e-4):
    groups = rewards.float().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if normalise_std:
        centred = centred / (groups.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.flatten()
