"""Unpaired: the mean of a over its seeds minus the mean of b over its own, with the two spreads combined, so
what a seed's data order does to both variants no longer cancels.

Caught by: test_paired_difference_by_hand, test_paired_difference_matches_the_study_summary
"""

import math

from _reference import use_solution

use_solution("13", globals())


def _mean_var(values):
    values = list(values)
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0)


def paired_difference(a, b):
    if not set(a) & set(b):
        raise ValueError("no seed in both")
    mean_a, var_a = _mean_var(a.values())
    mean_b, var_b = _mean_var(b.values())
    return {"mean": mean_a - mean_b, "std": math.sqrt(var_a + var_b), "n": len(set(a) & set(b))}
