"""MaxVio as max load / mean load, without the - 1 (a balanced layer scores 1 instead of 0).

Caught by: test_max_violation_by_hand, test_max_violation_matches_the_package
"""

from _reference import use_solution

use_solution("13", globals())


def max_violation(loads):
    values = [(load.max().float() / load.float().mean()).item() for load in loads.values() if load.sum() > 0]
    return sum(values) / len(values) if values else None
