"""Only the last micro-batch's load counted (the counter reset at every micro-batch).

Caught by: test_bias_update_counts_the_load_over_every_micro_batch
"""

import torch

from _reference import use_solution

use_solution("08", globals())


def bias_update_accumulated(bias, micro_batch_indices, gamma):
    load = torch.bincount(micro_batch_indices[-1].flatten(), minlength=bias.numel()).float()
    return bias + gamma * torch.sign(load.mean() - load)
