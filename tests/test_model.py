"""The assembled model: block wiring, causality, meta-device parameter totals, published counts."""

import dataclasses

import pytest
import torch

from minideepseek import ModelConfig, Transformer, count_parameters
from minideepseek.block import Block
from minideepseek.moe import MLP, MoE
from minideepseek.rope import precompute_freqs_cis


def test_block_is_prenorm_residual_and_dense_first():
    config = ModelConfig.from_preset("tiny")
    assert isinstance(Block(0, config).ffn, MLP) and isinstance(Block(1, config).ffn, MoE)
    block = Block(1, config)
    x = torch.randn(2, 6, config.dim)
    freqs_cis = precompute_freqs_cis(config, 6)
    h = x + block.attn(block.attn_norm(x), freqs_cis)
    torch.testing.assert_close(block(x, freqs_cis), h + block.ffn(block.ffn_norm(h)))


def test_logits_at_every_position_and_causal():
    config = ModelConfig.from_preset("tiny")
    torch.manual_seed(0)
    model = Transformer(config).eval()
    tokens = torch.randint(0, config.vocab_size, (2, 12))
    logits = model(tokens)
    assert logits.shape == (2, 12, config.vocab_size)
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % config.vocab_size
    torch.testing.assert_close(model(changed)[:, :8], logits[:, :8])
    assert not torch.allclose(model(changed)[:, 8:], logits[:, 8:])


def test_sequence_longer_than_max_seq_len_is_refused():
    config = ModelConfig.from_preset("tiny", max_seq_len=16, original_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        Transformer(config)(torch.zeros(1, 17, dtype=torch.long))


def test_gate_bias_is_float32_and_exists_at_every_size():
    for name in ["tiny", "mini"]:
        model_config = ModelConfig.from_preset(name, n_layers=2, n_mtp_layers=0)
        with torch.device("meta"):
            model = Transformer(model_config)
        bias = model.layers[1].ffn.gate.bias
        assert bias is not None and bias.dtype == torch.float32 and not bias.requires_grad
    model = Transformer(ModelConfig.from_preset("tiny")).to(torch.bfloat16)
    assert model.layers[1].ffn.gate.bias.dtype == torch.float32  # casting the model keeps the bias fp32
    assert model.layers[1].ffn.gate.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("preset", ["v3-671b", "v2-236b", "v2-lite-16b", "mini", "tiny"])
def test_meta_model_has_exactly_the_counted_parameters(preset):
    config = ModelConfig.from_preset(preset)
    if preset != "tiny":  # building every layer of the big models on meta is slow; layers are identical
        config = dataclasses.replace(config, n_layers=config.n_dense_layers + 2)
    with torch.device("meta"):
        model = Transformer(config)
    main = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("mtp."))
    mtp = sum(p.numel() for name, p in model.named_parameters() if name.startswith("mtp."))
    counted = count_parameters(config)
    assert (main, mtp) == (counted.total, counted.mtp)


def test_published_v3_counts():
    counted = count_parameters(ModelConfig.from_preset("v3-671b"))
    assert counted.total == 671_026_419_200
    assert counted.activated == 37_552_297_472
    assert counted.activated_without_embedding == 36_625_618_432
    assert counted.mtp == 11_610_068_224
    assert counted.kv_cache_latent == 576 and counted.kv_cache_per_head == 40_960
    # The hub checkpoint adds the MTP layer's own embedding and head copies: 685B, and with the FP8 scales
    # of the main model and the MTP layer it holds 684,531,386,000 elements (the published tensor census).
    hub_params = counted.total + counted.mtp + 2 * 129280 * 7168
    assert hub_params == 684_489_845_504
    one_more_moe_layer = count_parameters(ModelConfig.from_preset("v3-671b", n_layers=62))
    mtp_layer_scales = one_more_moe_layer.fp8_scales - counted.fp8_scales
    assert hub_params + counted.fp8_scales + mtp_layer_scales == 684_531_386_000


def test_published_v2_counts():
    lite = count_parameters(ModelConfig.from_preset("v2-lite-16b"))
    assert (lite.total, lite.activated_without_embedding) == (15_706_484_224, 2_451_435_008)
    v2 = count_parameters(ModelConfig.from_preset("v2-236b"))
    assert (v2.total, v2.activated_without_embedding) == (235_741_434_880, 20_851_512_320)


def test_weight_memory():
    counted = count_parameters(ModelConfig.from_preset("v3-671b"))
    assert counted.bytes_bf16 == 2 * counted.total + 2 * 256 * 58  # the fp32 bias takes 4 bytes
    # FP8 halves the quantised linears; embedding, head, norms and router stay BF16; scales are fp32.
    assert counted.bytes_fp8 == counted.bytes_bf16 - counted.fp8_weights + 4 * counted.fp8_scales
    assert 0.49 < counted.bytes_fp8 / counted.bytes_bf16 < 0.51
