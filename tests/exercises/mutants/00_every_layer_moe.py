"""Every layer counted as an MoE block: the first n_dense_layers dense layers forgotten.

Caught by: test_total_parameters_match_the_published_models, test_total_parameters_of_a_built_model
"""

from _reference import use_solution

use_solution("00", globals())


def total_parameters(config):
    return 2 * config.vocab_size * config.dim + config.n_layers * moe_layer_parameters(config) + config.dim
