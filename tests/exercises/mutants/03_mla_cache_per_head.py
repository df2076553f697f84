"""MLA's cache counted per head (n_heads x (latent + rope)), as if every head had its own latent.

Caught by: test_kv_cache_elements_per_token
"""

from _reference import use_solution

_solution = use_solution("03", globals())


def kv_cache_elements_per_token(config, kind, n_kv_heads=8):
    if kind == "mla":
        return config.n_heads * (config.kv_lora_rank + config.qk_rope_head_dim)
    return _solution.kv_cache_elements_per_token(config, kind, n_kv_heads)
