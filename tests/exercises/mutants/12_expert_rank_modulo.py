"""Experts placed round-robin (rank = expert % W) instead of in contiguous blocks (expert // (E / W)).

Caught by: test_all_to_all_splits_count_every_pair
"""

import torch

from _reference import use_solution

use_solution("12", globals())


def all_to_all_splits(indices_per_rank, n_experts, world_size):
    return torch.stack([torch.bincount(indices.flatten() % world_size, minlength=world_size)
                        for indices in indices_per_rank])
