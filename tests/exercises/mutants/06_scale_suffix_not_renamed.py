"""weight_scale_inv left as it is instead of becoming the official 'scale'.

Caught by: test_hub_to_official_by_hand
"""

from _reference import use_solution

_solution = use_solution("06", globals())


def hub_to_official(name):
    return _solution.hub_to_official(name.replace("weight_scale_inv", "@")).replace("@", "weight_scale_inv")
