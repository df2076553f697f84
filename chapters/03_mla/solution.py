"""Chapter 03 reference solutions: Multi-head Latent Attention as plain functions (see exercise.py)."""

import torch
import torch.nn.functional as F

from minideepseek.config import ModelConfig
from minideepseek.rope import apply_rotary_emb, softmax_scale


def kv_cache_elements_per_token(config: ModelConfig, kind: str, n_kv_heads: int = 8) -> int:
    one_kv_head = config.qk_head_dim + config.v_head_dim  # a key and a value
    cached_heads = {"mha": config.n_heads, "gqa": n_kv_heads, "mqa": 1}
    if kind == "mla":
        return config.kv_lora_rank + config.qk_rope_head_dim
    if kind not in cached_heads:
        raise ValueError(f"unknown attention kind {kind!r}; expected 'mha', 'gqa', 'mqa' or 'mla'")
    return cached_heads[kind] * one_kv_head


def compress_kv(x: torch.Tensor, wkv_a: torch.Tensor, kv_norm: torch.Tensor, freqs_cis: torch.Tensor,
                config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    latent, k_pe = F.linear(x, wkv_a).split([config.kv_lora_rank, config.qk_rope_head_dim], dim=-1)
    k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis).squeeze(2)  # as one head: (b, s, 1, rope)
    return F.rms_norm(latent, (config.kv_lora_rank,), kv_norm, config.norm_eps), k_pe


def attention_scores_with_decoupled_rope(q_nope: torch.Tensor, q_pe: torch.Tensor, k_nope: torch.Tensor,
                                         k_pe: torch.Tensor, scale: float) -> torch.Tensor:
    content = torch.einsum("bshd,bthd->bhst", q_nope, k_nope)
    position = torch.einsum("bshr,btr->bhst", q_pe, k_pe)  # one rotated key for all heads
    return (content + position) * scale


def absorbed_attention_scores(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                              wkv_b: torch.Tensor, scale: float, config: ModelConfig) -> torch.Tensor:
    per_head = wkv_b.view(config.n_heads, config.qk_nope_head_dim + config.v_head_dim, config.kv_lora_rank)
    w_uk = per_head[:, :config.qk_nope_head_dim]  # (heads, nope, kv_lora_rank)
    q_latent = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)  # the query, moved into latent space
    content = torch.einsum("bshc,btc->bhst", q_latent, latent)
    position = torch.einsum("bshr,btr->bhst", q_pe, k_pe)
    return (content + position) * scale


def mla_attention(x: torch.Tensor, weights: dict[str, torch.Tensor], freqs_cis: torch.Tensor,
                  config: ModelConfig) -> torch.Tensor:
    heads, nope, rope, v_dim = config.n_heads, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
    c_q = F.rms_norm(F.linear(x, weights["wq_a"]), (config.q_lora_rank,), weights["q_norm"], config.norm_eps)
    q_nope, q_pe = F.linear(c_q, weights["wq_b"]).unflatten(-1, (heads, nope + rope)).split([nope, rope], dim=-1)
    q_pe = apply_rotary_emb(q_pe, freqs_cis)

    latent, k_pe = compress_kv(x, weights["wkv_a"], weights["kv_norm"], freqs_cis, config)
    k_nope, v = F.linear(latent, weights["wkv_b"]).unflatten(-1, (heads, nope + v_dim)).split([nope, v_dim], dim=-1)

    scores = attention_scores_with_decoupled_rope(q_nope, q_pe, k_nope, k_pe, softmax_scale(config))
    seq = x.size(1)
    future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    out = torch.einsum("bhst,bthd->bshd", probs, v)  # (b, s, heads, v_head_dim)
    return F.linear(out.flatten(2), weights["wo"])
