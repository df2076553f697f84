"""The busiest expert measured against the idlest one (max / min - 1) instead of the mean load.

Caught by: test_max_violation_by_hand, test_max_violation_matches_the_package
"""

from _reference import use_solution

use_solution("13", globals())


def max_violation(loads):
    values = [(load.max().float() / load.float().min() - 1).item() for load in loads.values() if load.sum() > 0]
    return sum(values) / len(values) if values else None
