"""Keys absorbed, but the values expanded for every cached slot (W_UV applied before the weighted sum instead
of once after it).

Caught by: test_absorbed_decode_never_expands_the_cache
"""

import torch

from _reference import use_solution

use_solution("09", globals())


def absorbed_decode_attention(q_nope, q_pe, latent_cache, pe_cache, lengths, wkv_b, qk_nope_head_dim, scale):
    heads, rank = q_nope.size(1), latent_cache.size(-1)
    per_head = wkv_b.view(heads, -1, rank)
    w_uk, w_uv = per_head[:, :qk_nope_head_dim], per_head[:, qk_nope_head_dim:]
    q_latent = torch.einsum("bhd,hdc->bhc", q_nope, w_uk)
    scores = (torch.einsum("bhc,btc->bht", q_latent, latent_cache)
              + torch.einsum("bhr,btr->bht", q_pe, pe_cache)) * scale
    visible = torch.arange(latent_cache.size(1)) < lengths.view(-1, 1, 1)
    probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    values = torch.einsum("btc,hdc->bthd", latent_cache, w_uv)  # every slot's values, per head
    return torch.einsum("bht,bthd->bhd", probs, values)
