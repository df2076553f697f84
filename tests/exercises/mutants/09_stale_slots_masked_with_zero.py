"""Slots past each row's length masked with score 0 instead of -inf: the garbage still gets softmax weight.

Caught by: test_absorbed_decode_attention_ignores_slots_past_each_length,
           test_absorbed_decode_attention_equals_expanded_keys_and_values
"""

import torch

from _reference import use_solution

use_solution("09", globals())


def absorbed_decode_attention(q_nope, q_pe, latent_cache, pe_cache, lengths, wkv_b, qk_nope_head_dim, scale):
    heads, rank = q_nope.size(1), latent_cache.size(-1)
    per_head = wkv_b.view(heads, -1, rank)
    w_uk, w_uv = per_head[:, :qk_nope_head_dim], per_head[:, qk_nope_head_dim:]
    scores = (torch.einsum("bhc,btc->bht", torch.einsum("bhd,hdc->bhc", q_nope, w_uk), latent_cache)
              + torch.einsum("bhr,btr->bht", q_pe, pe_cache)) * scale
    visible = torch.arange(latent_cache.size(1)) < lengths.view(-1, 1, 1)
    probs = scores.masked_fill(~visible, 0.0).softmax(dim=-1)
    return torch.einsum("bhc,hdc->bhd", torch.einsum("bht,btc->bhc", probs, latent_cache), w_uv)
