"""Values paired by position (zip of the two dicts' values) instead of by seed: dicts filled in another order,
or with a seed missing, pair runs of different seeds.

Caught by: test_paired_difference_by_hand, test_paired_difference_matches_the_study_summary
"""

import math

from _reference import use_solution

use_solution("13", globals())


def paired_difference(a, b):
    differences = [x - y for x, y in zip(a.values(), b.values())]
    if not set(a) & set(b):
        raise ValueError("no seed in both")
    n = len(differences)
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}
