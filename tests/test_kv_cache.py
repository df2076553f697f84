"""Cached MLA decoding: both caches give the full forward's logits; the latent cache is 576 values a token."""

import copy

import pytest
import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.attention import MLA
from minideepseek.kv_cache import (KVCache, absorbed_scores, forward_step, kv_values_per_token, mtp_step,
                                   split_wkv_b)
from minideepseek.rope import precompute_freqs_cis


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return Transformer(ModelConfig.from_preset("tiny")).eval()


def logits(model, hidden):
    return model.head(model.norm(hidden))


@pytest.mark.parametrize("kind", ["absorbed", "naive", "reexpanded"])
def test_cached_decoding_gives_the_full_forward_logits_at_every_step(tiny_model, kind):
    """A prompt longer than the YaRN original length (128), then chunks and single tokens, two rows."""
    config = tiny_model.config
    assert config.uses_yarn and config.original_seq_len == 128
    tokens = torch.randint(0, config.vocab_size, (2, 142), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = tiny_model(tokens)
        cache = KVCache(config, kind, max_batch_size=2, max_seq_len=150)
        steps = [(0, 131), (131, 134)] + [(t, t + 1) for t in range(134, 142)]
        for begin, end in steps:
            hidden = forward_step(tiny_model, cache, tokens[:, begin:end], torch.full((2,), begin))
            torch.testing.assert_close(logits(tiny_model, hidden), full[:, begin:end], rtol=1e-4, atol=2e-5)


def test_rows_at_different_positions_match_each_row_alone(tiny_model):
    config = tiny_model.config
    a = torch.randint(0, config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(2))
    b = torch.randint(0, config.vocab_size, (1, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cache = KVCache(config, "absorbed", max_batch_size=2, max_seq_len=16)
        forward_step(tiny_model, cache, torch.cat([a[:, :8], torch.cat([b[:, :3], b[:, :3], b[:, :2]], 1)]),
                     torch.zeros(2, dtype=torch.long))  # row 1 holds 3 real tokens and 5 pads
        both = forward_step(tiny_model, cache, torch.cat([a[:, 8:], b[:, 3:]]), torch.tensor([8, 3]))
        torch.testing.assert_close(logits(tiny_model, both[0, -1]), tiny_model(a)[0, -1], rtol=1e-4, atol=2e-5)
        torch.testing.assert_close(logits(tiny_model, both[1, -1]), tiny_model(b)[0, -1], rtol=1e-4, atol=2e-5)


def test_absorbed_scores_equal_scores_against_expanded_keys():
    config = ModelConfig.from_preset("tiny")
    torch.manual_seed(0)
    mla = MLA(config).double()
    batch, seq, length, heads = 2, 3, 7, config.n_heads
    q_nope = torch.randn(batch, seq, heads, config.qk_nope_head_dim, dtype=torch.float64)
    q_pe = torch.randn(batch, seq, heads, config.qk_rope_head_dim, dtype=torch.float64)
    latent = torch.randn(batch, length, config.kv_lora_rank, dtype=torch.float64)
    k_pe = torch.randn(batch, length, config.qk_rope_head_dim, dtype=torch.float64)
    k, _ = mla.expand_kv(latent, k_pe)  # (batch, length, heads, qk_head_dim)
    expected = torch.einsum("bshd,bthd->bsht", torch.cat([q_nope, q_pe], -1), k) * 0.5
    w_uk, _ = split_wkv_b(mla)
    torch.testing.assert_close(absorbed_scores(q_nope, q_pe, latent, k_pe, w_uk, 0.5), expected)


def test_mtp_step_over_a_sequence_equals_the_mtp_module(tiny_model):
    config = tiny_model.config
    tokens = torch.randint(0, config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = tiny_model.forward_hidden(tokens[:, :9])
        expected = tiny_model.mtp[0](h, tiny_model.embed(tokens[:, 1:]), precompute_freqs_cis(config, 9))
        cache = KVCache(config, "absorbed", max_batch_size=2, max_seq_len=9, mtp_layers=1)
        first = mtp_step(tiny_model, cache, h[:, :6], tokens[:, 1:7], torch.zeros(2, dtype=torch.long))
        rest = mtp_step(tiny_model, cache, h[:, 6:], tokens[:, 7:], torch.full((2,), 6))
    torch.testing.assert_close(torch.cat([first, rest], 1), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cache_bytes_per_token_per_layer(dtype):
    """Exactly (kv_lora_rank + qk_rope_head_dim) x dtype bytes: 1,152 B for V3 in BF16."""
    size = torch.finfo(dtype).bits // 8
    for preset, latent, per_head in [("tiny", 32 + 16, 4 * (48 + 32)), ("v3-671b", 576, 40_960)]:
        config = ModelConfig.from_preset(preset)
        for kind, values in [("absorbed", latent), ("naive", per_head)]:
            cache = KVCache(config, kind, max_batch_size=3, max_seq_len=5, dtype=dtype, device="meta")
            assert cache.nbytes == config.n_layers * 3 * 5 * values * size
            assert cache.layers[0].nbytes == 3 * 5 * values * size
    v3 = KVCache(ModelConfig.from_preset("v3-671b"), max_batch_size=1, max_seq_len=1, dtype=torch.bfloat16,
                 device="meta")
    assert v3.layers[0].nbytes == 1_152


def test_values_per_token_by_scheme_at_v3_width():
    values = kv_values_per_token(ModelConfig.from_preset("v3-671b"))
    assert values == {"MLA latent (absorbed)": 512 + 64, "MLA per-head (naive)": 128 * (192 + 128),
                      "MHA": 2 * 128 * 128, "GQA (8 KV heads)": 2 * 8 * 128, "MQA": 2 * 128}
    assert round(values["MLA per-head (naive)"] / values["MLA latent (absorbed)"], 1) == 71.1


def test_cache_refuses_rows_and_positions_past_its_size(tiny_model):
    cache = KVCache(tiny_model.config, max_batch_size=2, max_seq_len=8)
    with pytest.raises(ValueError, match="max_batch_size=2"):
        forward_step(tiny_model, cache, torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="position 8 .* max_seq_len=8"):
        forward_step(tiny_model, cache, torch.zeros(1, 2, dtype=torch.long), torch.tensor([7]))
    with pytest.raises(ValueError, match="cache must be one of"):
        KVCache(tiny_model.config, "compressed")


def test_layer_benchmark_runs_and_its_three_paths_agree():
    """`minideepseek bench generate` on tiny sizes: a table whose last column is the paths' relative difference."""
    from minideepseek.bench.generate import bench_mla_layer, cache_memory_table

    report = bench_mla_layer(torch.device("cpu"), torch.float32, [(2, 8)], repeats=1)
    row = report.splitlines()[-1].split()
    assert row[:3] == ["2", "x", "8"] and float(row[-1]) < 1e-5
    assert "71.11x" in cache_memory_table(ModelConfig.from_preset("v3-671b"))


@pytest.mark.parametrize("kind", ["absorbed", "naive"])
def test_weights_stored_in_fp8_decode_like_their_full_forward(kind):
    """wkv_b frozen in FP8 (128x128 blocks). The naive cache calls the FP8 layer, so it matches the FP8
    model's own forward; the absorbed one folds the dequantised weight into q and the output without
    quantising those activations (as the official ``absorb`` path does), so it matches the forward of
    the same model with wkv_b alone a plain linear holding the dequantised weight."""
    from minideepseek.fp8 import dequantize_blockwise
    from minideepseek.fp8_linear import to_fp8

    torch.manual_seed(0)
    model = to_fp8(Transformer(ModelConfig.from_preset("tiny", n_mtp_layers=0)), fp8_weights=True).eval()
    reference = copy.deepcopy(model)
    if kind == "absorbed":
        for layer in reference.layers:
            fp8 = layer.attn.wkv_b
            assert fp8.stores_fp8
            layer.attn.wkv_b = torch.nn.Linear(fp8.in_features, fp8.out_features, bias=False)
            layer.attn.wkv_b.weight.data = dequantize_blockwise(fp8.weight, fp8.scale)
    tokens = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = reference(tokens)
        cache = KVCache(model.config, kind, max_batch_size=1, max_seq_len=12)
        for begin, end in [(0, 8)] + [(t, t + 1) for t in range(8, 12)]:
            hidden = forward_step(model, cache, tokens[:, begin:end], torch.full((1,), begin))
            torch.testing.assert_close(logits(model, hidden), full[:, begin:end], rtol=1e-4, atol=2e-5)
