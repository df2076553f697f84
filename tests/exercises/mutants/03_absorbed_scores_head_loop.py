"""absorbed_attention_scores that expands the keys one head at a time (a (batch, seq_k, nope) key per head):
still a per-head key for every cached token, only smaller at any instant.

Caught by: test_absorbed_scores_never_build_per_head_keys
"""

import torch

from _reference import use_solution

use_solution("03", globals())


def absorbed_attention_scores(q_nope, q_pe, latent, k_pe, wkv_b, scale, config):
    per_head = wkv_b.view(config.n_heads, config.qk_nope_head_dim + config.v_head_dim, config.kv_lora_rank)
    content = []
    for h in range(config.n_heads):
        k_h = latent @ per_head[h, :config.qk_nope_head_dim].T  # (batch, seq_k, nope)
        content.append(torch.einsum("bsd,btd->bst", q_nope[:, :, h], k_h))
    position = torch.einsum("bshr,btr->bhst", q_pe, k_pe)
    return (torch.stack(content, dim=1) + position) * scale
