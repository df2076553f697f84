"""The population standard deviation (divide by n) instead of the sample one (n - 1) of the differences.

Caught by: test_paired_difference_by_hand, test_paired_difference_matches_the_study_summary
"""

import math

from _reference import use_solution

use_solution("13", globals())


def paired_difference(a, b):
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in both")
    differences = [a[seed] - b[seed] for seed in seeds]
    n = len(differences)
    mean = sum(differences) / n
    return {"mean": mean, "std": math.sqrt(sum((d - mean) ** 2 for d in differences) / n), "n": n}
