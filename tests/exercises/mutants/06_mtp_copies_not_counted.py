"""The MTP layer's own copies of the embedding and the head (embed_tokens, shared_head.head) not counted.

Caught by: test_count_hub_tensors
"""

from _reference import use_solution

_solution = use_solution("06", globals())


def count_hub_tensors(config):
    return _solution.count_hub_tensors(config) - 2 * config.get("num_nextn_predict_layers", 0)
