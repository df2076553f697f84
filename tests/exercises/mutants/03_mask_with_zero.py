"""The causal mask fills future scores with 0 instead of -inf: future tokens still get softmax weight.

Caught by: test_mla_attention_equals_plain_attention_and_the_package
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("03", globals())


def mla_attention(x, weights, freqs_cis, config):
    heads, nope, rope, v_dim = config.n_heads, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
    c_q = F.rms_norm(F.linear(x, weights["wq_a"]), (config.q_lora_rank,), weights["q_norm"], config.norm_eps)
    q_nope, q_pe = F.linear(c_q, weights["wq_b"]).unflatten(-1, (heads, nope + rope)).split([nope, rope], dim=-1)
    q_pe = apply_rotary_emb(q_pe, freqs_cis)
    latent, k_pe = compress_kv(x, weights["wkv_a"], weights["kv_norm"], freqs_cis, config)
    k_nope, v = F.linear(latent, weights["wkv_b"]).unflatten(-1, (heads, nope + v_dim)).split([nope, v_dim], dim=-1)
    scores = attention_scores_with_decoupled_rope(q_nope, q_pe, k_nope, k_pe, softmax_scale(config))
    future = torch.ones(x.size(1), x.size(1), dtype=torch.bool).triu(1)
    probs = scores.masked_fill(future, 0.0).softmax(dim=-1)
    return F.linear(torch.einsum("bhst,bthd->bshd", probs, v).flatten(2), weights["wo"])
