"""The ablation baselines (chapter 13): standard attention, dense FFN layers, the expert-level auxiliary loss,
and their parameter, cache and FLOP counts, against naive loops and hand-computed values."""

import math

import pytest
import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.baselines import StandardAttention
from minideepseek.config import ConfigError
from minideepseek.generation import GenerationError, generate
from minideepseek.losses import compute_loss
from minideepseek.moe import MLP, MoE, expert_balance_loss
from minideepseek.params import count_parameters, training_flops_per_token

# No YaRN (max_seq_len == original_seq_len): RoPE is the plain theta^(-2j/d) rotation the naive version writes out.
PLAIN = dict(max_seq_len=128, original_seq_len=128)


def naive_attention(module: StandardAttention, x: torch.Tensor, theta: float) -> torch.Tensor:
    """Per head and per position, with RoPE as explicit 2x2 rotations of (even, odd) pairs."""
    batch, seq, _ = x.shape
    d = module.head_dim
    q = (x @ module.wq.weight.T).view(batch, seq, module.n_heads, d)
    k = (x @ module.wk.weight.T).view(batch, seq, module.kv_heads, d)
    v = (x @ module.wv.weight.T).view(batch, seq, module.kv_heads, module.v_head_dim)

    def rotate(t):
        out = t.clone()
        for pos in range(seq):
            for j in range(d // 2):
                angle = pos * theta ** (-2 * j / d)
                c, s = math.cos(angle), math.sin(angle)
                a, b = t[:, pos, :, 2 * j], t[:, pos, :, 2 * j + 1]
                out[:, pos, :, 2 * j], out[:, pos, :, 2 * j + 1] = a * c - b * s, a * s + b * c
        return out

    q, k = rotate(q), rotate(k)
    out = torch.zeros(batch, seq, module.n_heads, module.v_head_dim)
    group = module.n_heads // module.kv_heads
    for h in range(module.n_heads):
        kv = h // group  # query head h reads key/value head h // group
        for i in range(seq):
            scores = torch.stack([(q[:, i, h] * k[:, j, kv]).sum(-1) for j in range(i + 1)], -1) * d ** -0.5
            out[:, i, h] = torch.einsum("bj,bjd->bd", scores.softmax(-1), v[:, :i + 1, kv])
    return out.flatten(2) @ module.wo.weight.T


@pytest.mark.parametrize("kind,kv", [("mha", 0), ("gqa", 2), ("mqa", 0)])
def test_standard_attention_matches_a_naive_loop_with_explicit_rotations(kind, kv):
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny", attention=kind, n_kv_heads=kv, **PLAIN)
    module = StandardAttention(config)
    x = torch.randn(2, 7, config.dim)
    expected = naive_attention(module, x, config.rope_theta)
    assert module.kv_heads == {"mha": 4, "gqa": 2, "mqa": 1}[kind]
    torch.testing.assert_close(module(x, None), expected, atol=1e-5, rtol=1e-4)
    module.backend = "sdpa"
    torch.testing.assert_close(module(x, None), expected, atol=1e-5, rtol=1e-4)


def test_gqa_is_mha_with_each_key_value_head_repeated_for_its_query_group():
    torch.manual_seed(1)
    gqa = StandardAttention(ModelConfig.from_preset("tiny", attention="gqa", n_kv_heads=2))
    mha = StandardAttention(ModelConfig.from_preset("tiny", attention="mha"))
    d, dv = gqa.head_dim, gqa.v_head_dim
    with torch.no_grad():
        mha.wq.weight.copy_(gqa.wq.weight)
        mha.wo.weight.copy_(gqa.wo.weight)
        # query heads 0,1 read key head 0; heads 2,3 read key head 1
        mha.wk.weight.copy_(gqa.wk.weight.view(2, d, -1).repeat_interleave(2, 0).flatten(0, 1))
        mha.wv.weight.copy_(gqa.wv.weight.view(2, dv, -1).repeat_interleave(2, 0).flatten(0, 1))
    x = torch.randn(2, 9, 128)
    torch.testing.assert_close(gqa(x, None), mha(x, None))


@pytest.mark.parametrize("changes", [dict(attention="mha"), dict(attention="gqa", n_kv_heads=2), dict(attention="mqa"),
                                     dict(dense_ffn_dim=320), dict(n_shared_experts=0), dict(n_mtp_layers=2)])
def test_parameter_count_of_each_baseline_equals_the_module_it_builds(changes):
    config = ModelConfig.from_preset("tiny", **changes)
    model = Transformer(config)
    counts = count_parameters(config)
    assert counts.total + counts.mtp == sum(p.numel() for p in model.parameters())


def test_cache_per_token_by_hand():
    """tiny: 4 layers, 4 heads, qk head 32 + 16, v head 32, latent 32 + rope key 16."""
    values = {"mla": 32 + 16, "mha": 4 * (48 + 32), "gqa": 2 * (48 + 32), "mqa": 1 * (48 + 32)}
    for kind, per_layer in values.items():
        config = ModelConfig.from_preset("tiny", attention=kind, n_kv_heads=2 if kind == "gqa" else 0)
        assert config.kv_cache_values == per_layer
        assert count_parameters(config).kv_bytes_per_token == 2 * per_layer * 4  # BF16, 4 layers


def test_dense_baseline_replaces_every_moe_layer_and_its_flops_differ_by_the_gate_only():
    moe = ModelConfig.from_preset("tiny", n_mtp_layers=0)
    dense = ModelConfig.from_preset("tiny", n_mtp_layers=0, dense_ffn_dim=(1 + 4) * 64)  # 1 shared + top-4 of width 64
    model = Transformer(dense)
    assert not any(isinstance(m, MoE) for m in model.modules())
    assert [layer.ffn.w1.out_features for layer in model.layers] == [384, 320, 320, 320]
    # Same activated expert width, so the FLOPs differ by the 3 MoE layers' gate: 16 x 128 weights + 16 biases.
    gate = 16 * 128 + 16
    assert training_flops_per_token(moe, 128) - training_flops_per_token(dense, 128) == 6 * 3 * gate


def test_flops_per_token_by_hand_for_mha():
    """6 N + 6 L H (dqk + dv) T, N = every matrix a token multiplies except the input embedding."""
    c = ModelConfig.from_preset("tiny", attention="mha", n_mtp_layers=0, dense_ffn_dim=320, vocab_size=1000)
    attention = 128 * 4 * 48 * 2 + 128 * 4 * 32 * 2  # wq, wk (48 wide), wv, wo (32 wide)
    ffn = [3 * 128 * 384] + [3 * 128 * 320] * 3
    norms = 4 * 2 * 128 + 128
    n = 4 * attention + sum(ffn) + norms + 1000 * 128  # + the head
    assert training_flops_per_token(c, 64) == 6 * n + 6 * 4 * 4 * (48 + 32) * 64


def test_no_shared_expert_means_no_shared_module_and_the_routed_sum_alone():
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny", n_shared_experts=0, n_expert_groups=1, n_limited_groups=1)
    moe = MoE(config)
    assert moe.shared_experts is None
    x = torch.randn(5, 128)
    weights, indices, _ = moe.gate(x)
    expected = torch.stack([sum(weights[t, j] * moe.experts[int(indices[t, j])](x[t]) for j in range(4))
                            for t in range(5)])
    torch.testing.assert_close(moe(x), expected, atol=1e-6, rtol=1e-5)


def test_expert_balance_loss_by_hand_over_the_whole_batch():
    """alpha * sum_i f_i P_i with f_i = E / (K T) * picks_i and P_i the mean normalised score, over all T tokens."""
    scores = torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1]])
    indices = torch.tensor([[0, 1], [1, 0], [0, 2]])  # picks: expert 0 three times, 1 twice, 2 once
    f = torch.tensor([3.0, 2.0, 1.0, 0.0]) * 4 / (2 * 3)
    p = scores.mean(0)  # rows already sum to 1
    torch.testing.assert_close(expert_balance_loss(scores, indices, 0.01), 0.01 * (f * p).sum())


def test_expert_balance_loss_trains_the_gate_and_joins_the_loss():
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny", n_mtp_layers=0, gate_bias=False, balance_loss_alpha=0.0,
                                     expert_balance_loss_alpha=0.5)
    model = Transformer(config)
    batch = torch.randint(0, config.vocab_size, (2, 17))
    out = compute_loss(model, batch)
    assert out.balance.item() > 0
    out.loss.backward()
    assert model.layers[1].ffn.gate.weight.grad.abs().sum() > 0
    plain = compute_loss(Transformer(ModelConfig.from_preset("tiny", n_mtp_layers=0, gate_bias=False,
                                                             balance_loss_alpha=0.0)), batch)
    assert plain.balance.item() == 0


@pytest.mark.parametrize("changes,field", [
    (dict(attention="gqa", n_kv_heads=3), "n_kv_heads"), (dict(attention="gqa"), "n_kv_heads"),
    (dict(attention="mha", n_kv_heads=2), "n_kv_heads"), (dict(attention="sliding"), "attention"),
    (dict(dense_ffn_dim=-1), "dense_ffn_dim"), (dict(expert_balance_loss_alpha=float("nan")), "expert_balance_loss_alpha"),
])
def test_bad_switches_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_preset("tiny", **changes)


def test_baselines_have_no_hub_layout_and_no_cached_decoding():
    config = ModelConfig.from_preset("tiny", attention="mqa")
    with pytest.raises(ConfigError, match="ablation baseline"):
        config.to_hf_dict()
    with pytest.raises(GenerationError, match="MLA"):
        generate(Transformer(config), [1, 2, 3], 2)
    assert isinstance(Transformer(ModelConfig.from_preset("tiny", dense_ffn_dim=64)).layers[2].ffn, MLP)
    assert ModelConfig.from_dict(config.to_dict()) == config  # the official form keeps the switches
