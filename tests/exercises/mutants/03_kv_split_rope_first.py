"""wkv_a's output split as [k_pe | latent] (rope first) instead of [latent | k_pe].

Caught by: test_compress_kv_matches_the_package
"""

import torch.nn.functional as F

from _reference import use_solution

use_solution("03", globals())


def compress_kv(x, wkv_a, kv_norm, freqs_cis, config):
    k_pe, latent = F.linear(x, wkv_a).split([config.qk_rope_head_dim, config.kv_lora_rank], dim=-1)
    k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis).squeeze(2)
    return F.rms_norm(latent, (config.kv_lora_rank,), kv_norm, config.norm_eps), k_pe
