"""absorbed_decode_attention that re-expands every cached latent into per-head keys and values through wkv_b
at each step: the right numbers, and the cost the latent cache was meant to avoid.

Caught by: test_absorbed_decode_never_expands_the_cache
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("09", globals())


def absorbed_decode_attention(q_nope, q_pe, latent_cache, pe_cache, lengths, wkv_b, qk_nope_head_dim, scale):
    heads = q_nope.size(1)
    kv = F.linear(latent_cache, wkv_b).unflatten(-1, (heads, -1))  # (batch, max_len, heads, nope + v)
    k_nope, v = kv[..., :qk_nope_head_dim], kv[..., qk_nope_head_dim:]
    scores = (torch.einsum("bhd,bthd->bht", q_nope, k_nope) + torch.einsum("bhr,btr->bht", q_pe, pe_cache)) * scale
    visible = torch.arange(latent_cache.size(1)) < lengths.view(-1, 1, 1)
    probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    return torch.einsum("bht,bthd->bhd", probs, v)
