"""The boundaries rounded to the nearest integer and not clamped at 0 (the official code floors/ceils and clamps).

Caught by: test_yarn_correction_range
"""

import math

from _reference import use_solution

use_solution("02", globals())


def yarn_correction_range(dim, theta, original_seq_len, beta_fast, beta_slow):
    low = round(_correction_dim(beta_fast, dim, theta, original_seq_len))
    high = round(_correction_dim(beta_slow, dim, theta, original_seq_len))
    return low, min(high, dim - 1)
