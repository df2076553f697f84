"""YaRN's attention temperature applied once (m) instead of on both query and key (m^2).

Caught by: test_yarn_softmax_scale
"""

import math

from _reference import use_solution

use_solution("02", globals())


def yarn_softmax_scale(qk_head_dim: int, factor: float, mscale: float) -> float:
    return qk_head_dim ** -0.5 * (0.1 * mscale * math.log(factor) + 1.0)
