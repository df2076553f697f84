"""Weights drawn from a uniform distribution with the right standard deviation instead of a normal one.

Caught by: test_init_weights_is_v3s_normal_0_006
"""

import math

import torch
from torch import nn

from _reference import use_solution

_solution = use_solution("05", globals())


def init_weights(model, std=0.006):
    _solution.init_weights(model, std)
    bound = std * math.sqrt(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, Gate)):
                module.weight.uniform_(-bound, bound)
