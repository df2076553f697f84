"""The batch-size ramp spread over the whole run (14.8T tokens) instead of the first 469B.

Caught by: test_v3_batch_size_ramp
"""

import math

from _reference import use_solution

use_solution("08", globals())


def v3_batch_size(tokens):
    return min(15360, 3072 * (1 + math.floor(4 * tokens / 14.8e12)))
