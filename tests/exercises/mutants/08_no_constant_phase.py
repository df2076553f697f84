"""V3's schedule without the constant phase: the cosine starts right after the warm-up (a textbook
warm-up + cosine over the whole run) instead of at 10T tokens.

Caught by: test_v3_learning_rate_schedule
"""

import math

from _reference import use_solution

use_solution("08", globals())


def v3_learning_rate(step, tokens):
    peak, low = 2.2e-4, 2.2e-5
    if step < 2000:
        return peak * (step + 1) / 2000
    progress = min(1.0, tokens / 14.3e12)
    return low + (peak - low) * (1 + math.cos(math.pi * progress)) / 2
