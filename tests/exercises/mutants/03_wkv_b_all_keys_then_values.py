"""wkv_b's output split as "all heads' keys, then all heads' values" instead of per head [k_nope | v]:
mixes heads silently (in the layer and in the absorbed scores).

Caught by: test_absorbed_scores_equal_scores_with_reexpanded_keys,
           test_mla_attention_equals_plain_attention_and_the_package
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("03", globals())


def absorbed_attention_scores(q_nope, q_pe, latent, k_pe, wkv_b, scale, config):
    w_uk = wkv_b[:config.n_heads * config.qk_nope_head_dim].view(config.n_heads, config.qk_nope_head_dim, -1)
    content = torch.einsum("bshc,btc->bhst", torch.einsum("bshd,hdc->bshc", q_nope, w_uk), latent)
    return (content + torch.einsum("bshr,btr->bhst", q_pe, k_pe)) * scale


def mla_attention(x, weights, freqs_cis, config):
    heads, nope, rope, v_dim = config.n_heads, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
    c_q = F.rms_norm(F.linear(x, weights["wq_a"]), (config.q_lora_rank,), weights["q_norm"], config.norm_eps)
    q_nope, q_pe = F.linear(c_q, weights["wq_b"]).unflatten(-1, (heads, nope + rope)).split([nope, rope], dim=-1)
    q_pe = apply_rotary_emb(q_pe, freqs_cis)
    latent, k_pe = compress_kv(x, weights["wkv_a"], weights["kv_norm"], freqs_cis, config)
    k_all, v_all = F.linear(latent, weights["wkv_b"]).split([heads * nope, heads * v_dim], dim=-1)
    k_nope, v = k_all.unflatten(-1, (heads, nope)), v_all.unflatten(-1, (heads, v_dim))
    scores = attention_scores_with_decoupled_rope(q_nope, q_pe, k_nope, k_pe, softmax_scale(config))
    future = torch.ones(x.size(1), x.size(1), dtype=torch.bool).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return F.linear(torch.einsum("bhst,bthd->bshd", probs, v).flatten(2), weights["wo"])
