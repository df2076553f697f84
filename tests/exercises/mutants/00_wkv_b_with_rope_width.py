"""wkv_b counted as kv_lora_rank -> n_heads * (qk_head_dim + v_head_dim): the rope part is not up-projected.

Caught by: test_mla_parameters
"""

from _reference import use_solution

_solution = use_solution("00", globals())
_mla = _solution.mla_parameters


def mla_parameters(config):
    return _mla(config) + config.kv_lora_rank * config.n_heads * config.qk_rope_head_dim


_solution.mla_parameters = mla_parameters
