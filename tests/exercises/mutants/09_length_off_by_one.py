"""Off by one in the visible slots: row b attends to lengths[b] - 1 slots (slot t visible when t + 1 < length).

Caught by: test_absorbed_decode_attention_equals_expanded_keys_and_values
"""

import torch

from _reference import use_solution

_solution = use_solution("09", globals())


def absorbed_decode_attention(q_nope, q_pe, latent_cache, pe_cache, lengths, wkv_b, qk_nope_head_dim, scale):
    return _solution.absorbed_decode_attention(q_nope, q_pe, latent_cache, pe_cache, (lengths - 1).clamp(min=1),
                                               wkv_b, qk_nope_head_dim, scale)
