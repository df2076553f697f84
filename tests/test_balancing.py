"""Load balancing: the auxiliary-loss-free bias rule (balancing.py) and the sequence-wise balance loss (moe.py)."""

import pytest
import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.balancing import expert_load_stats, update_expert_biases
from minideepseek.losses import compute_loss
from minideepseek.moe import MoE, sequence_balance_loss


def small_moe_config(**overrides) -> ModelConfig:
    values = dict(dim=16, inter_dim=16, moe_inter_dim=8, n_layers=1, n_dense_layers=0, n_heads=1,
                  n_routed_experts=16, n_activated_experts=2, n_shared_experts=1, score_func="sigmoid",
                  gate_bias=True, vocab_size=32, kv_lora_rank=4, qk_nope_head_dim=4, qk_rope_head_dim=2,
                  v_head_dim=4)
    return ModelConfig(**{**values, **overrides})


def test_sign_rule_by_hand():
    """Loads [10, 2, 4, 4] (mean 5): the overloaded expert's bias goes down by gamma, the others up."""
    moe = MoE(small_moe_config(n_routed_experts=4))
    moe.gate.bias.data = torch.tensor([0.5, 0.0, -0.25, 0.0])
    moe.tokens_per_expert.copy_(torch.tensor([10, 2, 4, 4]))
    stats = update_expert_biases(moe, speed=0.125)
    assert moe.gate.bias.tolist() == [0.375, 0.125, -0.125, 0.125]
    assert stats == pytest.approx({"moe/max_over_mean": 2.0, "moe/min_over_mean": 0.4, "load/max_over_mean": 2.0,
                                   "load/dropped_fraction": 0.0})
    assert moe.tokens_per_expert.tolist() == [0, 0, 0, 0]  # reset for the next step
    assert moe.gate.bias.dtype == torch.float32


def test_a_skewed_router_is_balanced_by_the_bias_rule_alone():
    """Three experts get most tokens; 200 bias updates with the default gamma = 0.001, no optimizer,
    bring max/mean load close to 1 and leave every weight bitwise unchanged."""
    torch.manual_seed(0)
    config = small_moe_config()
    moe = MoE(config).train()
    with torch.no_grad():
        moe.gate.weight.normal_(0, 0.05)
        moe.gate.weight[:3] += 0.05  # inputs have a positive mean: experts 0-2 win most tokens
    weights_before = {name: p.clone() for name, p in moe.named_parameters() if name != "gate.bias"}

    def tokens(n):
        return torch.randn(1, n, config.dim) + 0.5

    first = None
    for _ in range(200):
        with torch.no_grad():
            moe(tokens(2048))
        stats = update_expert_biases(moe, speed=config.bias_update_speed)
        first = first or stats["moe/max_over_mean"]
    with torch.no_grad():
        moe(tokens(16384))
    final = expert_load_stats(moe)

    assert first > 3.0
    assert final["moe/max_over_mean"] < 1.15
    assert final["moe/min_over_mean"] > 0.85
    assert (moe.gate.bias[:3] < 0).all()  # the favoured experts were pushed down
    for name, p in moe.named_parameters():
        if name != "gate.bias":
            assert torch.equal(p, weights_before[name]), name


def naive_balance_loss(scores, indices, alpha):
    """Eq. 17-20 written as loops: per sequence, f_i and P_i over its tokens, then the batch mean."""
    batch, seq, n_experts = scores.shape
    k = indices.size(-1)
    losses = []
    for b in range(batch):
        total = 0.0
        for i in range(n_experts):
            f_i = n_experts / (k * seq) * sum(float(i in indices[b, t].tolist()) for t in range(seq))
            p_i = sum(scores[b, t, i] / scores[b, t].sum() for t in range(seq)) / seq
            total = total + f_i * p_i
        losses.append(alpha * total)
    return torch.stack(losses).mean()


def test_sequence_balance_loss_matches_the_equations():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 5, 6, generator=generator)
    indices = torch.rand(3, 5, 6, generator=generator).topk(2, dim=-1).indices
    torch.testing.assert_close(sequence_balance_loss(scores, indices, 0.01), naive_balance_loss(scores, indices, 0.01))


def test_sequence_balance_loss_is_alpha_when_balanced():
    """Uniform picks (f_i = 1) and uniform scores (P_i = 1/E): L = alpha * E * 1/E = alpha."""
    indices = torch.arange(8).view(4, 2).unsqueeze(0)  # 4 tokens pick 8 experts once each
    assert sequence_balance_loss(torch.full((1, 4, 8), 0.3), indices, 1e-4).item() == pytest.approx(1e-4)


def test_moe_keeps_its_balance_loss_only_when_training_with_alpha():
    torch.manual_seed(0)
    moe = MoE(small_moe_config(balance_loss_alpha=0.1)).train()
    x = torch.randn(2, 8, 16)
    moe(x)
    scores = torch.sigmoid(x.reshape(-1, 16) @ moe.gate.weight.T).view(2, 8, 16)
    indices = moe.gate(x.reshape(-1, 16))[1].view(2, 8, 2)
    torch.testing.assert_close(moe.balance_loss, naive_balance_loss(scores, indices, 0.1))
    moe.balance_loss.backward()
    assert moe.gate.weight.grad.abs().sum() > 0  # through P_i (the counts f_i carry no gradient)
    moe.eval()
    moe(x)
    assert moe.balance_loss is None
    moe_no_alpha = MoE(small_moe_config(balance_loss_alpha=0.0)).train()
    moe_no_alpha(x)
    assert moe_no_alpha.balance_loss is None


def test_model_loss_sums_every_moe_layer_and_stats_name_the_hub_layers():
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny", n_layers=3, vocab_size=64, balance_loss_alpha=0.01)
    model = Transformer(config).train()
    batch = torch.randint(0, 64, (2, 9))
    out = compute_loss(model, batch)
    moes = [model.layers[1].ffn, model.layers[2].ffn, model.mtp[0].block.ffn]
    torch.testing.assert_close(out.balance, sum(m.balance_loss for m in moes))
    compute_loss(model, batch)  # a second micro-batch: counts accumulate
    assert model.layers[1].ffn.tokens_per_expert.sum() == 2 * 2 * 8 * config.n_activated_experts
    stats = update_expert_biases(model)
    assert {"layer_1/max_over_mean", "layer_2/max_over_mean", "layer_3/max_over_mean"} <= set(stats)  # MTP = layer 3
    assert stats["load/max_over_mean"] >= 1.0
    assert all(m.tokens_per_expert.sum() == 0 for m in moes)
    assert expert_load_stats(model) == {}  # nothing counted since the reset


def test_without_gate_bias_only_the_counts_reset():
    moe = MoE(small_moe_config(gate_bias=False, score_func="softmax")).train()
    moe(torch.randn(1, 32, 16))
    stats = update_expert_biases(moe, speed=0.1)
    assert moe.gate.bias is None
    assert stats["moe/max_over_mean"] >= 1.0
    assert moe.tokens_per_expert.sum() == 0
