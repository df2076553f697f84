"""Grades chapter 03 (Multi-head Latent Attention): chapters/03_mla/exercise.py or solution.py.

References: hand-computed cache sizes, per-head loops written here, a plain per-head
attention built from the same weights, and the package's ``MLA`` (itself tested against
a plain attention in tests/test_attention.py).
"""

import math

import pytest
import torch

from minideepseek import ModelConfig
from minideepseek.attention import MLA
from minideepseek.rope import precompute_freqs_cis, rope_frequencies, softmax_scale
from watch import TensorWatch

V3 = ModelConfig.from_preset("v3-671b")
TINY = ModelConfig.from_preset("tiny")  # 4 heads, q_lora 64, kv_lora 32, head dims 32 + 16 / 32, YaRN on


def random_mla(config: ModelConfig, seed: int = 0) -> MLA:
    """An MLA whose every weight, norms included, is random (unit norm gains would hide a missing gain)."""
    torch.manual_seed(seed)
    mla = MLA(config)
    with torch.no_grad():
        for p in mla.parameters():
            p.normal_(std=0.2)
    return mla


def weights_of(mla: MLA) -> dict[str, torch.Tensor]:
    return {name.removesuffix(".weight"): p.detach() for name, p in mla.named_parameters()}


def test_kv_cache_elements_per_token(exercise):
    """Per token and layer, MHA caches a key and a value for every head, GQA for each KV head, MQA for one, and
    MLA only the latent plus the shared rotated key (576 for V3); an unknown kind raises ValueError naming it.
    Reread: The idea and its motivation"""
    ex = exercise("03")
    # V3: 128 heads x (192 + 128) for MHA, latent 512 + rope key 64 for MLA.
    assert ex.kv_cache_elements_per_token(V3, "mha") == 40_960
    assert ex.kv_cache_elements_per_token(V3, "gqa", n_kv_heads=8) == 2_560
    assert ex.kv_cache_elements_per_token(V3, "mqa") == 320
    assert ex.kv_cache_elements_per_token(V3, "mla") == 576
    assert ex.kv_cache_elements_per_token(V3, "gqa", n_kv_heads=128) == 40_960  # GQA with one group per head is MHA
    # tiny: 4 x (48 + 32) = 320; latent 32 + rope 16 = 48.
    assert ex.kv_cache_elements_per_token(TINY, "mha") == 320
    assert ex.kv_cache_elements_per_token(TINY, "gqa", n_kv_heads=2) == 160
    assert ex.kv_cache_elements_per_token(TINY, "mla") == 48
    with pytest.raises(ValueError, match="mha2"):
        ex.kv_cache_elements_per_token(V3, "mha2")


def test_compress_kv_matches_the_package(exercise):
    """compress_kv must split wkv_a's output as [latent | k_pe] (latent first), RMS-normalise the latent with
    kv_norm, and rotate k_pe once as a single head.
    Reread: Pitfalls"""
    ex = exercise("03")
    mla = random_mla(TINY)
    x = torch.randn(2, 7, TINY.dim)
    freqs_cis = precompute_freqs_cis(TINY, 7)
    w = weights_of(mla)
    latent, k_pe = ex.compress_kv(x, w["wkv_a"], w["kv_norm"], freqs_cis, TINY)
    assert latent.shape == (2, 7, TINY.kv_lora_rank) and k_pe.shape == (2, 7, TINY.qk_rope_head_dim)
    expected_latent, expected_k_pe = mla.compress_kv(x, freqs_cis)
    torch.testing.assert_close(latent, expected_latent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_pe, expected_k_pe, rtol=1e-5, atol=1e-5)


def per_head_scores(q_nope, q_pe, k_nope, k_pe, scale):
    """Concatenate each head's [nope | rope] query and key, one head at a time."""
    batch, seq_q, heads, _ = q_nope.shape
    out = torch.empty(batch, heads, seq_q, k_nope.size(1), dtype=q_nope.dtype)
    for b in range(batch):
        for h in range(heads):
            q = torch.cat([q_nope[b, :, h], q_pe[b, :, h]], dim=-1)  # (seq_q, nope + rope)
            k = torch.cat([k_nope[b, :, h], k_pe[b]], dim=-1)  # (seq_k, nope + rope), k_pe shared
            out[b, h] = q @ k.T * scale
    return out


def test_decoupled_rope_scores_match_a_per_head_loop(exercise):
    """The score of head h is q_nope . k_nope (per head) plus q_pe . k_pe with ONE rotated key shared by all
    heads, times the scale, shaped (batch, heads, seq_q, seq_k).
    Reread: The equations"""
    ex = exercise("03")
    torch.manual_seed(1)
    q_nope, q_pe = torch.randn(2, 5, 3, 8), torch.randn(2, 5, 3, 4)
    k_nope, k_pe = torch.randn(2, 6, 3, 8), torch.randn(2, 6, 4)
    scores = ex.attention_scores_with_decoupled_rope(q_nope, q_pe, k_nope, k_pe, 0.3)
    assert scores.shape == (2, 3, 5, 6)
    torch.testing.assert_close(scores, per_head_scores(q_nope, q_pe, k_nope, k_pe, 0.3))


def test_absorbed_scores_equal_scores_with_reexpanded_keys(exercise):
    """Absorbed scores must equal the scores with keys re-expanded head by head: fold head h's W^UK rows of
    wkv_b (rows [h*(nope+v), h*(nope+v)+nope)) into its query.
    Reread: The equations"""
    ex = exercise("03")
    c = TINY
    torch.manual_seed(2)
    latent, k_pe = torch.randn(2, 6, c.kv_lora_rank), torch.randn(2, 6, c.qk_rope_head_dim)
    q_nope = torch.randn(2, 4, c.n_heads, c.qk_nope_head_dim)
    q_pe = torch.randn(2, 4, c.n_heads, c.qk_rope_head_dim)
    wkv_b = torch.randn(c.n_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank) * 0.2
    # Re-expand the keys head by head: rows [h*(nope+v), h*(nope+v)+nope) of wkv_b are head h's W^UK.
    k_nope = torch.stack([latent @ wkv_b[h * (c.qk_nope_head_dim + c.v_head_dim):][:c.qk_nope_head_dim].T
                          for h in range(c.n_heads)], dim=2)
    expected = per_head_scores(q_nope, q_pe, k_nope, k_pe, 0.1)
    scores = ex.absorbed_attention_scores(q_nope, q_pe, latent, k_pe, wkv_b, 0.1, c)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


def rotate_pairs(x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """RoPE on interleaved pairs with real cos/sin. x: (seq, rope) float64."""
    angles = torch.arange(x.size(0), dtype=torch.float64)[:, None] * rope_frequencies(config).double()[None, :]
    even, odd = x[:, 0::2], x[:, 1::2]
    out = torch.empty_like(x)
    out[:, 0::2] = even * angles.cos() - odd * angles.sin()
    out[:, 1::2] = even * angles.sin() + odd * angles.cos()
    return out


def plain_attention(w: dict[str, torch.Tensor], x: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    """One sequence x: (seq, dim) in float64, head by head and query by query, causal."""
    w = {name: t.double() for name, t in w.items()}

    def rms(v, gain):
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + c.norm_eps) * gain

    nope, rope, v_dim = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
    q_all = rms(x @ w["wq_a"].T, w["q_norm"]) @ w["wq_b"].T
    kv = x @ w["wkv_a"].T
    k_pe = rotate_pairs(kv[:, c.kv_lora_rank:], c)
    kv_up = rms(kv[:, :c.kv_lora_rank], w["kv_norm"]) @ w["wkv_b"].T
    scale = c.qk_head_dim ** -0.5 * (0.1 * c.mscale * math.log(c.rope_factor) + 1) ** 2  # YaRN is on for tiny
    heads = []
    for h in range(c.n_heads):
        q = q_all[:, h * (nope + rope):(h + 1) * (nope + rope)]
        q = torch.cat([q[:, :nope], rotate_pairs(q[:, nope:], c)], dim=1)
        head_kv = kv_up[:, h * (nope + v_dim):(h + 1) * (nope + v_dim)]
        k, v = torch.cat([head_kv[:, :nope], k_pe], dim=1), head_kv[:, nope:]
        out = torch.zeros(x.size(0), v_dim, dtype=torch.float64)
        for t in range(x.size(0)):
            out[t] = torch.softmax(k[:t + 1] @ q[t] * scale, dim=0) @ v[:t + 1]
        heads.append(out)
    return torch.cat(heads, dim=1) @ w["wo"].T


def test_mla_attention_equals_plain_attention_and_the_package(exercise):
    """The whole layer must match a per-head causal attention in float64 and the package's MLA: per-head [nope |
    rope] layouts, the YaRN softmax scale with m^2, -inf above the diagonal.
    Reread: Pitfalls"""
    ex = exercise("03")
    assert TINY.uses_yarn and softmax_scale(TINY) != TINY.qk_head_dim ** -0.5  # the mscale trap is live
    mla = random_mla(TINY, seed=3)
    x = torch.randn(2, 9, TINY.dim)
    freqs_cis = precompute_freqs_cis(TINY, 9)
    out = ex.mla_attention(x, weights_of(mla), freqs_cis, TINY)
    assert out.shape == (2, 9, TINY.dim)
    with torch.no_grad():
        torch.testing.assert_close(out, mla(x, freqs_cis), rtol=1e-4, atol=1e-4)
    for b in range(2):
        torch.testing.assert_close(out[b].double(), plain_attention(weights_of(mla), x[b].double(), TINY),
                                   rtol=1e-4, atol=1e-4)


# Every width distinct from every other, so that a tensor's shape tells what it holds: 5 heads, keys
# nope 24 + rope 8, values 20, latent 12; 96 cached tokens, 3 queries.
ODD = ModelConfig.from_preset("tiny", n_heads=5, qk_nope_head_dim=24, qk_rope_head_dim=8, v_head_dim=20,
                              kv_lora_rank=12)


def test_absorbed_scores_never_build_per_head_keys(exercise):
    """absorbed_attention_scores must work from the latent alone: no tensor it builds may hold a head's keys
    (or values) for all cached tokens, in any layout (absorb W^UK into the query instead of expanding the cache).
    Reread: Pitfalls"""
    ex = exercise("03")
    c, batch, seq_q, seq_k = ODD, 2, 3, 96
    generator = torch.Generator().manual_seed(5)
    latent, k_pe = torch.randn(batch, seq_k, c.kv_lora_rank, generator=generator), torch.randn(
        batch, seq_k, c.qk_rope_head_dim, generator=generator)
    q_nope = torch.randn(batch, seq_q, c.n_heads, c.qk_nope_head_dim, generator=generator)
    q_pe = torch.randn(batch, seq_q, c.n_heads, c.qk_rope_head_dim, generator=generator)
    wkv_b = torch.randn(c.n_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, generator=generator) * 0.2
    with TensorWatch() as watch:
        scores = ex.absorbed_attention_scores(q_nope, q_pe, latent, k_pe, wkv_b, 0.1, c)
    per_head = c.qk_nope_head_dim + c.v_head_dim
    k_nope = torch.stack([latent @ wkv_b[h * per_head:h * per_head + c.qk_nope_head_dim].T
                          for h in range(c.n_heads)], dim=2)
    torch.testing.assert_close(scores, per_head_scores(q_nope, q_pe, k_nope, k_pe, 0.1), rtol=1e-4, atol=1e-4)
    widths = {c.qk_nope_head_dim, c.v_head_dim, per_head}
    widths |= {c.n_heads * w for w in widths}
    offending = watch.offending(seq_k, widths)
    assert not offending, (f"per-head keys or values built for all {seq_k} cached tokens (shapes {offending[:3]}): "
                           "fold W^UK into the query and attend to the latent")
