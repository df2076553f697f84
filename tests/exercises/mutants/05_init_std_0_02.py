"""The GPT-2 / Llama habit: weights from N(0, 0.02) instead of V3's N(0, 0.006).

Caught by: test_init_weights_is_v3s_normal_0_006
"""

from _reference import use_solution

_solution = use_solution("05", globals())


def init_weights(model, std=0.006):
    _solution.init_weights(model, 0.02)
