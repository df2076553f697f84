"""The bias moved in proportion to the load error instead of by its sign (gamma * (mean - load)).

Caught by: test_bias_update_sign_rule
"""

from _reference import use_solution

use_solution("04", globals())


def bias_update(bias, load, gamma):
    load = load.float()
    return bias + gamma * (load.mean() - load)
