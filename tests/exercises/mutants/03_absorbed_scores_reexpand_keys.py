"""absorbed_attention_scores that re-expands every cached latent into per-head keys (latent @ W^UK^T), then
scores them: the right numbers, without the absorption that makes the latent cache pay off.

Caught by: test_absorbed_scores_never_build_per_head_keys
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("03", globals())


def absorbed_attention_scores(q_nope, q_pe, latent, k_pe, wkv_b, scale, config):
    nope, v_dim = config.qk_nope_head_dim, config.v_head_dim
    k_nope, _ = F.linear(latent, wkv_b).unflatten(-1, (config.n_heads, nope + v_dim)).split([nope, v_dim], dim=-1)
    return attention_scores_with_decoupled_rope(q_nope, q_pe, k_nope, k_pe, scale)
