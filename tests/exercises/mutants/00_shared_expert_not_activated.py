"""The activated count leaves out the shared expert, as if it were routed like the others.

Caught by: test_activated_parameters_match_the_published_models
"""

from _reference import use_solution

_solution = use_solution("00", globals())


def activated_parameters(config):
    moe_layers = config.n_layers - config.n_dense_layers
    shared = mlp_parameters(config.dim, config.n_shared_experts * config.moe_inter_dim)
    return _solution.activated_parameters(config) - moe_layers * shared
