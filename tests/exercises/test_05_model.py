"""Grades chapter 05 (the assembled model): chapters/05_model/exercise.py or solution.py.

References: the published DeepSeek-V3 / V2 counts (cross-checked against a tensor census of
the released checkpoint, see tests/test_checkpoint.py), hand-computed counts, modules built here on
the meta device or the CPU and counted with ``numel``, and the package's ``Block``.
"""

import dataclasses

import pytest
import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.attention import MLA
from minideepseek.block import Block
from minideepseek.mtp import MTPModule, mtp_logits
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
    """One attention layer counts wq_a, q_norm, wq_b (or a single wq when q_lora_rank is 0), wkv_a, kv_norm,
    wkv_b and wo, as a built MLA does.
    Reread: The equations"""
    ex = exercise("05")
    assert ex.count_mla_parameters(V3) == 187_107_328
    # DeepSeek-V2-Lite has no query compression: wq 2048 x 16*192, wkv_a 2048 x 576, kv_norm 512,
    # wkv_b 512 x 16*256, wo 16*128 x 2048.
    v2_lite = ModelConfig.from_preset("v2-lite-16b")
    assert ex.count_mla_parameters(v2_lite) == 6_291_456 + 1_179_648 + 512 + 2_097_152 + 4_194_304
    for config in (TINY, v2_lite):
        assert ex.count_mla_parameters(config) == numel(on_meta(lambda: MLA(config)))


def test_count_moe_layer_parameters(exercise):
    """An MoE layer counts the attention, both block norms, every routed expert, the shared expert(s) as one
    MLP, the gate weight and the gate bias only when the config has one.
    Reread: Pitfalls"""
    ex = exercise("05")
    assert ex.count_moe_layer_parameters(V3) == 11_507_286_272
    for config in (TINY, TINY_V2_STYLE):
        layer = on_meta(lambda: Block(config.n_dense_layers, config))
        assert ex.count_moe_layer_parameters(config) == numel(layer), config.score_func


def test_count_model_parameters_matches_the_published_numbers(exercise):
    """(total, activated) must be V3's (671,026,419,200, 37,552,297,472): dense first layers, MoE layers,
    embedding, final norm and head, MTP excluded.
    Reread: Pitfalls"""
    ex = exercise("05")
    assert ex.count_model_parameters(V3) == (671_026_419_200, 37_552_297_472)
    # DeepSeek-V2 (236B): 21.38B activated counting the embedding, 20.85B without it.
    assert ex.count_model_parameters(ModelConfig.from_preset("v2-236b")) == (235_741_434_880, 21_375_800_320)


@pytest.mark.parametrize("tied", [False, True])
def test_count_model_parameters_matches_a_built_model(exercise, tied):
    """The counts must match a model built on the meta device, with and without tied embeddings (the head then
    has no weight of its own).
    Reread: Pitfalls"""
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
    """build_on_meta must return a Transformer whose every parameter lives on the meta device, with the same
    state-dict shapes as a real one.
    Reread: Pitfalls"""
    ex = exercise("05")
    model = ex.build_on_meta(TINY)
    assert isinstance(model, Transformer)
    assert all(p.device.type == "meta" for p in model.parameters())
    reference = Transformer(TINY)  # a real one, on the CPU
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert numel(model) == numel(reference)


@pytest.mark.parametrize("layer_id", [0, 1])  # a dense block, then an MoE block
def test_block_forward_matches_the_package_block(exercise, layer_id):
    """A PRE-norm block: h = x + attn(attn_norm(x)), out = h + ffn(ffn_norm(h)); the residual stream itself is
    never normalised.
    Reread: Pitfalls"""
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


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random, norm gains and router biases included, so that every wiring mistake shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(mean=1.0 if p.dim() == 1 else 0.0, std=0.2 if p.dim() == 1 else 0.1)
    return model.eval()


@pytest.mark.parametrize("preset_changes", [{}, {"n_dense_layers": 2, "n_mtp_layers": 2, "tie_word_embeddings": True}])
def test_build_model_matches_the_package_forward(exercise, preset_changes):
    """The assembled model must hold the package's parameters under the same names (dense MLPs in the first
    n_dense_layers layers, MoE after, MTP modules with their own block and norm) and compute the same logits
    and MTP logits: pre-norm blocks, final norm before the head, MTP fed the hidden states before that norm.
    Reread: The code, next to the math"""
    ex = exercise("05")
    config = ModelConfig.from_preset("tiny", n_layers=3, vocab_size=64, **preset_changes)
    reference = randomised(Transformer(config), seed=5)
    model = ex.build_model(config)
    assert not any(isinstance(m, (Transformer, Block, MTPModule)) for m in model.modules()), \
        "assemble the model from MLA, MLP, MoE and RMSNorm, not from the package's Block/Transformer/MTPModule"
    missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
    assert not missing and not unexpected, f"missing {missing[:4]}, unexpected {unexpected[:4]}"
    model.eval()
    if config.tie_word_embeddings:
        assert model.head.weight is model.embed.weight
    tokens = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        logits, depth_logits = model(tokens)
        torch.testing.assert_close(logits, reference(tokens), rtol=1e-4, atol=1e-5)
        expected = mtp_logits(reference, reference.forward_hidden(tokens), tokens)
        assert len(depth_logits) == config.n_mtp_layers
        for k, (got, want) in enumerate(zip(depth_logits, expected), start=1):
            assert got.shape == (2, 7 - k, 64), f"depth {k}"
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_init_weights_is_v3s_normal_0_006(exercise):
    """Every matrix (embedding, head, projections, experts, router) from N(0, 0.006), every norm gain 1 and every
    router bias 0, whatever the values before.
    Reread: The code, next to the math"""
    ex = exercise("05")
    config = ModelConfig.from_preset("tiny", n_layers=2, vocab_size=512)
    model = randomised(Transformer(config), seed=7)
    torch.manual_seed(8)
    ex.init_weights(model)
    matrices = [(name, p) for name, p in model.named_parameters() if p.dim() >= 2]
    assert {"embed.weight", "head.weight", "layers.1.ffn.gate.weight", "layers.0.attn.wkv_b.weight",
            "mtp.0.eh_proj.weight"} <= {name for name, _ in matrices}
    everything = torch.cat([p.detach().flatten() for _, p in matrices])
    assert abs(everything.std().item() - 0.006) < 0.0002 and abs(everything.mean().item()) < 0.0002
    within_one_std = (everything.abs() < 0.006).double().mean().item()
    assert abs(within_one_std - 0.6827) < 0.01, f"{within_one_std:.3f} within one std: not a normal distribution"
    for name, p in matrices:
        if p.numel() >= 4096:
            assert abs(p.std().item() - 0.006) < 0.0006, f"{name}: std {p.std().item():.4f}"
    gate = model.layers[1].ffn.gate
    assert abs(gate.weight.std().item() - 0.006) < 0.0015, "the router weight is initialised too"
    for name, p in model.named_parameters():
        if name.endswith("gate.bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), f"{name}: norm gains start at 1"
    assert gate.bias.dtype == torch.float32
