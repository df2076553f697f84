"""SwiGLU with silu on the w3 (up) branch instead of the w1 (gate) branch.

Caught by: test_swiglu_matches_the_formula_and_the_package
"""

import torch.nn.functional as F

from _reference import use_solution

use_solution("04", globals())


def swiglu(x, w1, w2, w3):
    return F.linear(F.linear(x, w1) * F.silu(F.linear(x, w3)), w2)
