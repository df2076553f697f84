"""The routers left out of the initialisation: Gate is not an nn.Linear, so a loop over nn.Linear misses its
weight (and leaves its bias as it was).

Caught by: test_init_weights_is_v3s_normal_0_006
"""

import torch
from torch import nn

from _reference import use_solution

use_solution("05", globals())


def init_weights(model, std=0.006):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
