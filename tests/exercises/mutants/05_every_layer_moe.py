"""No dense-first layers: every block gets an MoE (V3's layers 0-2 are dense MLPs of width inter_dim).

Caught by: test_build_model_matches_the_package_forward
"""

from _reference import use_solution

_solution = use_solution("05", globals())


def build_model(config):
    import dataclasses
    model = _solution._Model(dataclasses.replace(config, n_dense_layers=0))
    model.config = config
    return model
