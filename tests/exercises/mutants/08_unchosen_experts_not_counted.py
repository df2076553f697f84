"""bincount without minlength: experts past the last chosen one vanish from the load (and from its mean).

Caught by: test_bias_update_counts_the_load_over_every_micro_batch
"""

import torch

from _reference import use_solution

use_solution("08", globals())


def bias_update_accumulated(bias, micro_batch_indices, gamma):
    load = torch.bincount(torch.cat([i.flatten() for i in micro_batch_indices])).float()
    new = bias.clone()
    new[:load.numel()] += gamma * torch.sign(load.mean() - load)
    return new
