"""Grades chapter 05 (the assembled model): chapters/05_model/exercise.py or solution.py.

References: the published DeepSeek-V3 / V2 counts (cross-checked against a tensor census of
the released checkpoint, see docs/reference), hand-computed counts, modules built here on
the meta device or the CPU and counted with ``numel``, and the package's ``Block``.
"""

import dataclasses

import pytest
import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.attention import MLA
from minideepseek.block import Block
from minideepseek.rope import precompute_freqs_cis

V3 = ModelConfig.from_preset("v3-671b")
TINY = ModelConfig.from_preset("tiny")
# V2-style routing: softmax scores, no gate bias, two shared experts, no groups.
TINY_V2_STYLE = ModelConfig.from_preset("tiny", score_func="softmax", gate_bias=False, n_shared_experts=2,
                                        n_expert_groups=1, n_limited_groups=1)


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared (tied) tensors are counted once


def on_meta(build):
    with torch.device("meta"):
        return build()


def test_count_mla_parameters(exercise):
    ex = exercise("05")
    assert ex.count_mla_parameters(V3) == 187_107_328
    # DeepSeek-V2-Lite has no query compression: wq 2048 x 16*192, wkv_a 2048 x 576, kv_norm 512,
    # wkv_b 512 x 16*256, wo 16*128 x 2048.
    v2_lite = ModelConfig.from_preset("v2-lite-16b")
    assert ex.count_mla_parameters(v2_lite) == 6_291_456 + 1_179_648 + 512 + 2_097_152 + 4_194_304
    for config in (TINY, v2_lite):
        assert ex.count_mla_parameters(config) == numel(on_meta(lambda: MLA(config)))


def test_count_moe_layer_parameters(exercise):
    ex = exercise("05")
    assert ex.count_moe_layer_parameters(V3) == 11_507_286_272
    for config in (TINY, TINY_V2_STYLE):
        layer = on_meta(lambda: Block(config.n_dense_layers, config))
        assert ex.count_moe_layer_parameters(config) == numel(layer), config.score_func


def test_count_model_parameters_matches_the_published_numbers(exercise):
    ex = exercise("05")
    assert ex.count_model_parameters(V3) == (671_026_419_200, 37_552_297_472)
    # DeepSeek-V2 (236B): 21.38B activated counting the embedding, 20.85B without it.
    assert ex.count_model_parameters(ModelConfig.from_preset("v2-236b")) == (235_741_434_880, 21_375_800_320)


@pytest.mark.parametrize("tied", [False, True])
def test_count_model_parameters_matches_a_built_model(exercise, tied):
    ex = exercise("05")
    for config in (TINY, TINY_V2_STYLE):
        config = dataclasses.replace(config, tie_word_embeddings=tied)
        model = on_meta(lambda: Transformer(config))
        total, activated = ex.count_model_parameters(config)
        assert total == numel(model) - numel(model.mtp)
        one_expert = numel(model.layers[-1].ffn.experts[0])
        idle_experts = (config.n_routed_experts - config.n_activated_experts) * (config.n_layers - config.n_dense_layers)
        assert activated == total - idle_experts * one_expert


def test_build_on_meta(exercise):
    ex = exercise("05")
    model = ex.build_on_meta(TINY)
    assert isinstance(model, Transformer)
    assert all(p.device.type == "meta" for p in model.parameters())
    reference = Transformer(TINY)  # a real one, on the CPU
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert numel(model) == numel(reference)


@pytest.mark.parametrize("layer_id", [0, 1])  # a dense block, then an MoE block
def test_block_forward_matches_the_package_block(exercise, layer_id):
    ex = exercise("05")
    torch.manual_seed(layer_id)
    block = Block(layer_id, TINY).eval()
    with torch.no_grad():
        for p in block.parameters():  # random gains too: a post-norm block would then differ
            p.normal_(mean=1.0 if p.dim() == 1 else 0.0, std=0.2)
    x = torch.randn(2, 6, TINY.dim)
    freqs_cis = precompute_freqs_cis(TINY, 6)
    with torch.no_grad():
        out = ex.block_forward(x, freqs_cis, block.attn_norm, block.attn, block.ffn_norm, block.ffn)
        torch.testing.assert_close(out, block(x, freqs_cis))
