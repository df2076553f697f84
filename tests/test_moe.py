"""The gate against brute-force enumeration, and the vectorised MoE against a per-token loop."""

import itertools

import pytest
import torch

from minideepseek import ModelConfig
from minideepseek.moe import Gate, MoE


def brute_force_route(scores, bias, n_groups, topk_groups, topk, route_scale, sigmoid):
    """One token. Enumerate every allowed set of groups and of experts; return {expert: weight}."""
    n_experts = scores.numel()
    per_group = n_experts // n_groups
    biased = scores + (bias if bias is not None else 0)

    def group_score(g):
        members = sorted(biased[g * per_group:(g + 1) * per_group].tolist(), reverse=True)
        return sum(members[:2]) if bias is not None else members[0]

    best_groups = max(itertools.combinations(range(n_groups), topk_groups),
                      key=lambda groups: sum(group_score(g) for g in groups))
    allowed = [e for g in best_groups for e in range(g * per_group, (g + 1) * per_group)]
    chosen = max(itertools.combinations(allowed, topk), key=lambda experts: sum(biased[e].item() for e in experts))
    weights = {e: scores[e].item() for e in chosen}
    if sigmoid:
        total = sum(weights.values())
        weights = {e: w / total for e, w in weights.items()}
    return {e: w * route_scale for e, w in weights.items()}


@pytest.mark.parametrize("bias_shift", [0.0, -3.0])  # -3: every biased score negative (the -inf vs 0 trap)
def test_sigmoid_gate_with_bias_and_groups_matches_brute_force(bias_shift):
    config = ModelConfig.from_preset("tiny", n_routed_experts=12, n_expert_groups=4, n_limited_groups=2,
                                     n_activated_experts=3)
    torch.manual_seed(1)
    gate = Gate(config)
    torch.nn.init.normal_(gate.weight, std=0.5)
    gate.bias.data = torch.randn(12) * 0.3 + bias_shift
    x = torch.randn(40, config.dim)
    weights, indices, scores = gate(x)
    for t in range(40):
        expected = brute_force_route(scores[t], gate.bias, 4, 2, 3, config.route_scale, sigmoid=True)
        got = dict(zip(indices[t].tolist(), weights[t].tolist()))
        assert got.keys() == expected.keys(), t
        for e in expected:
            assert got[e] == pytest.approx(expected[e], rel=1e-5)
    torch.testing.assert_close(scores, torch.sigmoid(x @ gate.weight.T))


def test_softmax_gate_without_bias_matches_brute_force():
    config = ModelConfig.from_preset("tiny", score_func="softmax", gate_bias=False, route_scale=16.0,
                                     n_routed_experts=12, n_expert_groups=4, n_limited_groups=3,
                                     n_activated_experts=4)
    gate = Gate(config)
    assert gate.bias is None
    torch.nn.init.normal_(gate.weight, std=0.5)
    x = torch.randn(30, config.dim)
    weights, indices, scores = gate(x)
    for t in range(30):
        expected = brute_force_route(scores[t], None, 4, 3, 4, 16.0, sigmoid=False)
        assert dict(zip(indices[t].tolist(), weights[t].tolist())) == pytest.approx(expected, rel=1e-5)


def test_bias_changes_selection_but_not_weights():
    config = ModelConfig.from_preset("tiny", n_expert_groups=1, n_limited_groups=1)
    gate = Gate(config)
    torch.nn.init.normal_(gate.weight, std=0.5)
    x = torch.randn(1, config.dim)
    _, indices_before, scores = gate(x)
    favourite = scores[0].argmin().item()
    gate.bias.data[favourite] = 10.0  # force the least-liked expert in
    weights, indices, _ = gate(x)
    assert favourite in indices[0].tolist() and favourite not in indices_before[0].tolist()
    chosen = scores[0, indices[0]]
    torch.testing.assert_close(weights[0], chosen / chosen.sum() * config.route_scale)


def test_moe_equals_per_token_loop():
    config = ModelConfig.from_preset("tiny")
    torch.manual_seed(0)
    moe = MoE(config)
    for p in moe.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 11, config.dim)
    out = moe(x)
    flat = x.view(-1, config.dim)
    weights, indices, _ = moe.gate(flat)
    for t in range(flat.size(0)):
        expected = moe.shared_experts(flat[t])
        for w, e in zip(weights[t], indices[t]):
            expected = expected + w * moe.experts[e](flat[t])
        torch.testing.assert_close(out.view(-1, config.dim)[t], expected, rtol=1e-5, atol=1e-5)


def test_moe_counts_tokens_per_expert_in_training():
    config = ModelConfig.from_preset("tiny")
    moe = MoE(config).train()
    moe(torch.randn(3, 5, config.dim))
    assert moe.tokens_per_expert.sum().item() == 3 * 5 * config.n_activated_experts
    moe.eval()
    moe(torch.randn(3, 5, config.dim))
    assert moe.tokens_per_expert.sum().item() == 3 * 5 * config.n_activated_experts


def test_routing_stays_in_fp32_under_bf16_autocast():
    """Under torch.autocast a linear layer runs in bf16 whatever its inputs' dtype; the gate leaves autocast,
    so its scores (and with them the chosen experts) are exactly those of the fp32 computation."""
    torch.manual_seed(0)
    gate = Gate(ModelConfig.from_preset("tiny"))
    with torch.no_grad():
        gate.bias.normal_(0, 0.01)
    x = torch.randn(256, gate.weight.size(1))
    weights, indices, scores = gate(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights_ac, indices_ac, scores_ac = gate(x)
    assert scores_ac.dtype == torch.float32
    assert torch.equal(scores_ac, torch.nn.functional.linear(x, gate.weight).sigmoid())
    assert torch.equal(scores_ac, scores) and torch.equal(indices_ac, indices) and torch.equal(weights_ac, weights)
