"""Steps truncated (int) instead of rounded: 2.7 steps' worth of FLOPs buys 2 steps.

Caught by: test_iso_flop_steps_by_hand
"""

from _reference import use_solution

use_solution("13", globals())


def iso_flop_steps(total_flops, tokens_per_step, flops_per_token):
    return max(1, int(total_flops / (tokens_per_step * flops_per_token)))
