"""The gate bias counted even when the config has none.

Caught by: test_moe_layer_parameters
"""

from _reference import use_solution

_solution = use_solution("00", globals())


def moe_layer_parameters(config):
    return _solution.moe_layer_parameters(config) + (0 if config.gate_bias else config.n_routed_experts)
