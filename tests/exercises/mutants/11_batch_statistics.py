"""Advantages normalised over the whole batch instead of within each prompt's group (REINFORCE with a batch baseline).

Caught by: test_group_advantages_by_hand
"""

from _reference import use_solution

use_solution("11", globals())


def group_advantages(rewards, group_size, normalise_std=True, eps=1e-4):
    r = rewards.float()
    centred = r - r.mean()
    return centred / (r.std() + eps) if normalise_std else centred
