"""compress_kv caches the latent before kv_norm (the norm forgotten), so every later step reads c, not kv_norm(c).

Caught by: test_compress_kv_matches_the_package
"""

import torch.nn.functional as F

from _reference import use_solution

use_solution("03", globals())


def compress_kv(x, wkv_a, kv_norm, freqs_cis, config):
    latent, k_pe = F.linear(x, wkv_a).split([config.kv_lora_rank, config.qk_rope_head_dim], dim=-1)
    return latent, apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis).squeeze(2)
