"""MLA against a plain per-head attention written here from the same weights."""

import math

import torch

from minideepseek import ModelConfig
from minideepseek.attention import MLA
from minideepseek.rope import precompute_freqs_cis, rope_frequencies


def rms(x, weight, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_pairs(x, freqs):
    """Rotate interleaved pairs with real cos/sin. x: (seq, rope_dim) float64."""
    angles = torch.arange(x.size(0), dtype=torch.float64)[:, None] * freqs[None, :]
    even, odd = x[:, 0::2], x[:, 1::2]
    out = torch.empty_like(x)
    out[:, 0::2] = even * angles.cos() - odd * angles.sin()
    out[:, 1::2] = even * angles.sin() + odd * angles.cos()
    return out


def plain_attention(mla: MLA, config: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    """One sequence x: (seq, dim), float64, head by head with an explicit causal softmax."""
    W = {name: p.detach().double() for name, p in mla.named_parameters()}
    eps, seq = config.norm_eps, x.size(0)
    freqs = rope_frequencies(config).double()
    nope, vdim = config.qk_nope_head_dim, config.v_head_dim
    if config.q_lora_rank:
        q_all = rms(x @ W["wq_a.weight"].T, W["q_norm.weight"], eps) @ W["wq_b.weight"].T
    else:
        q_all = x @ W["wq.weight"].T
    kv = x @ W["wkv_a.weight"].T
    latent, k_pe = kv[:, :config.kv_lora_rank], rotate_pairs(kv[:, config.kv_lora_rank:], freqs)
    kv_up = rms(latent, W["kv_norm.weight"], eps) @ W["wkv_b.weight"].T
    scale = config.qk_head_dim ** -0.5
    if config.max_seq_len > config.original_seq_len:
        scale *= (0.1 * config.mscale * math.log(config.rope_factor) + 1) ** 2
    outputs = []
    for h in range(config.n_heads):
        q = q_all[:, h * config.qk_head_dim:(h + 1) * config.qk_head_dim]
        q = torch.cat([q[:, :nope], rotate_pairs(q[:, nope:], freqs)], dim=1)
        block = kv_up[:, h * (nope + vdim):(h + 1) * (nope + vdim)]
        k = torch.cat([block[:, :nope], k_pe], dim=1)
        v = block[:, nope:]
        head_out = torch.zeros(seq, vdim, dtype=torch.float64)
        for t in range(seq):
            scores = (k[:t + 1] @ q[t]) * scale
            head_out[t] = torch.softmax(scores, dim=0) @ v[:t + 1]
        outputs.append(head_out)
    return torch.cat(outputs, dim=1) @ W["wo.weight"].T


def check_against_plain(config):
    torch.manual_seed(0)
    mla = MLA(config)
    for p in mla.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 9, config.dim)
    out = mla(x, precompute_freqs_cis(config, 9))
    for b in range(2):
        torch.testing.assert_close(out[b].double(), plain_attention(mla, config, x[b].double()),
                                   rtol=1e-4, atol=1e-5)


def test_mla_with_low_rank_query_equals_plain_attention():
    check_against_plain(ModelConfig.from_preset("tiny"))


def test_mla_with_plain_wq_equals_plain_attention():
    check_against_plain(ModelConfig.from_preset("tiny", q_lora_rank=0, max_seq_len=128))  # also YaRN off


def test_latent_and_rope_key_are_all_that_future_attention_needs():
    """The keys and values MLA attends to are a function of (latent, k_pe) alone."""
    config = ModelConfig.from_preset("tiny")
    mla = MLA(config)
    x = torch.randn(1, 5, config.dim)
    freqs_cis = precompute_freqs_cis(config, 5)
    latent, k_pe = mla.compress_kv(x, freqs_cis)
    assert latent.shape == (1, 5, config.kv_lora_rank) and k_pe.shape == (1, 5, config.qk_rope_head_dim)
    k, v = mla.expand_kv(latent, k_pe)
    assert k.shape == (1, 5, config.n_heads, config.qk_head_dim)
    assert v.shape == (1, 5, config.n_heads, config.v_head_dim)
    for h in range(config.n_heads):  # the rotated key part is shared by every head
        torch.testing.assert_close(k[:, :, h, config.qk_nope_head_dim:], k_pe)
