"""No floor of one step: a variant whose one step costs more than the budget trains 0 steps.

Caught by: test_iso_flop_steps_by_hand, test_iso_flop_steps_match_the_study_budget
"""

from _reference import use_solution

use_solution("13", globals())


def iso_flop_steps(total_flops, tokens_per_step, flops_per_token):
    return round(total_flops / (tokens_per_step * flops_per_token))
