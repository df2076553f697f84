"""The attention's two latent norms (q_norm, kv_norm) left out of the count.

Caught by: test_mla_parameters, test_total_parameters_match_the_published_models
"""

from _reference import use_solution

_solution = use_solution("00", globals())
_mla = _solution.mla_parameters


def mla_parameters(config):
    return _mla(config) - (config.q_lora_rank if config.q_lora_rank else 0) - config.kv_lora_rank


_solution.mla_parameters = mla_parameters
