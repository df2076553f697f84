"""The bias moved after every micro-batch, from that micro-batch's load, instead of once per optimizer step
from the whole step's load.

Caught by: test_bias_update_counts_the_load_over_every_micro_batch
"""

import torch

from _reference import use_solution

use_solution("08", globals())


def bias_update_accumulated(bias, micro_batch_indices, gamma):
    for indices in micro_batch_indices:
        load = torch.bincount(indices.flatten(), minlength=bias.numel()).float()
        bias = bias + gamma * torch.sign(load.mean() - load)
    return bias
