"""The cosine decays to 0 (the textbook default) instead of to 10% of the peak, 2.2e-5.

Caught by: test_v3_learning_rate_schedule
"""

import math

from _reference import use_solution

_solution = use_solution("08", globals())


def v3_learning_rate(step, tokens):
    if step >= 2000 and 10e12 <= tokens < 14.3e12:
        return 2.2e-4 * (1 + math.cos(math.pi * (tokens - 10e12) / 4.3e12)) / 2
    return _solution.v3_learning_rate(step, tokens)
