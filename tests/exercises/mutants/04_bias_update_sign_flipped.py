"""The bias update pushed the wrong way: overloaded experts get a HIGHER bias, so the imbalance grows.

Caught by: test_bias_update_sign_rule
"""

import torch

from _reference import use_solution

use_solution("04", globals())


def bias_update(bias, load, gamma):
    load = load.float()
    return bias + gamma * torch.sign(load - load.mean())
