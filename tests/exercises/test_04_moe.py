"""Grades chapter 04 (DeepSeekMoE): chapters/04_moe/exercise.py or solution.py.

References: the SwiGLU formula, a brute-force router that enumerates every allowed set of
groups and of experts, hand-computed bias updates, and the package's ``Gate``/``MoE``
(themselves tested against brute force and a per-token loop in tests/test_moe.py).
"""

import itertools

import pytest
import torch

from minideepseek import ModelConfig
from minideepseek.moe import MLP, Gate, MoE


def brute_force_route(scores, bias, n_groups, topk_groups, topk, route_scale):
    """One token. The best set of groups by summed group scores, then the best set of experts in them."""
    biased = (scores + bias).tolist()
    per_group = len(biased) // n_groups
    members = [range(g * per_group, (g + 1) * per_group) for g in range(n_groups)]
    group_score = [sum(sorted((biased[e] for e in members[g]), reverse=True)[:2]) for g in range(n_groups)]
    groups = max(itertools.combinations(range(n_groups), topk_groups), key=lambda gs: sum(group_score[g] for g in gs))
    allowed = [e for g in groups for e in members[g]]
    chosen = max(itertools.combinations(allowed, topk), key=lambda es: sum(biased[e] for e in es))
    total = sum(scores[e].item() for e in chosen)
    return {e: scores[e].item() / total * route_scale for e in chosen}


def as_dict(weights, indices, t):
    return dict(zip(indices[t].tolist(), weights[t].tolist()))


def test_swiglu_matches_the_formula_and_the_package(exercise):
    """One expert is w2(silu(w1 x) * (w3 x)) with weights in nn.Linear layout (out, in): silu on the w1 branch
    only.
    Reread: The equations"""
    ex = exercise("04")
    torch.manual_seed(0)
    mlp = MLP(16, 24)
    x = torch.randn(5, 16)
    w1, w2, w3 = mlp.w1.weight.detach(), mlp.w2.weight.detach(), mlp.w3.weight.detach()
    out = ex.swiglu(x, w1, w2, w3)
    a = x @ w1.T
    torch.testing.assert_close(out, (a / (1 + torch.exp(-a)) * (x @ w3.T)) @ w2.T, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(out, mlp(x))


@pytest.mark.parametrize("bias_shift", [0.0, -3.0])  # -3: every biased score is negative
def test_gate_route_matches_brute_force(exercise, bias_shift):
    """The chosen experts must be the best topk by BIASED score among the topk_groups groups with the highest
    sum of their two best biased scores; excluded experts must be masked with -inf, since biased scores can be
    negative.
    Reread: Pitfalls"""
    ex = exercise("04")
    torch.manual_seed(1)
    scores = torch.sigmoid(torch.randn(60, 12) * 2)
    bias = torch.randn(12) * 0.3 + bias_shift
    weights, indices = ex.gate_route(scores, bias, n_groups=4, topk_groups=2, topk=3, route_scale=2.5)
    assert weights.shape == (60, 3) and indices.shape == (60, 3)
    assert indices.dtype == torch.int64
    limit_mattered = 0
    for t in range(60):
        expected = brute_force_route(scores[t], bias, 4, 2, 3, 2.5)
        got = as_dict(weights, indices, t)
        assert got.keys() == expected.keys(), f"token {t}: chose {sorted(got)}, expected {sorted(expected)}"
        assert list(got.values()) == pytest.approx([expected[e] for e in got], rel=1e-5)
        limit_mattered += set(expected) != set((scores[t] + bias).topk(3).indices.tolist())
    assert limit_mattered > 0  # the data exercises the group limit: a plain top-k fails this test


def test_gate_route_weights_ignore_the_bias(exercise):
    """The bias only selects: the weights are the chosen experts' UNBIASED scores, divided by their sum, times
    route_scale.
    Reread: Pitfalls"""
    ex = exercise("04")
    scores = torch.tensor([[0.9, 0.8, 0.2, 0.1]])
    bias = torch.tensor([0.0, 0.0, 5.0, 5.0])  # forces the two weakest experts in
    weights, indices = ex.gate_route(scores, bias, n_groups=1, topk_groups=1, topk=2, route_scale=1.0)
    assert sorted(indices[0].tolist()) == [2, 3]
    assert as_dict(weights, indices, 0) == pytest.approx({2: 0.2 / 0.3, 3: 0.1 / 0.3})


def test_gate_route_matches_the_package_gate_at_v3_routing_shape(exercise):
    """At V3's shape (256 experts, 8 groups, keep 4, choose 8, x2.5) the routing must equal the package's Gate
    for every token.
    Reread: The code, next to the math"""
    ex = exercise("04")
    config = ModelConfig.from_preset("v3-671b", dim=32)  # 256 experts, 8 groups, keep 4, choose 8, x2.5
    torch.manual_seed(2)
    gate = Gate(config)
    with torch.no_grad():
        gate.weight.normal_(std=0.3)
        gate.bias.normal_(std=0.05)
    x = torch.randn(64, config.dim)
    expected_weights, expected_indices, scores = gate(x)
    weights, indices = ex.gate_route(scores, gate.bias.detach(), 8, 4, 8, 2.5)
    for t in range(64):
        assert as_dict(weights, indices, t) == pytest.approx(as_dict(expected_weights, expected_indices, t), rel=1e-5)


def test_moe_forward_naive_matches_the_package(exercise):
    """The layer is shared(x) + sum over the chosen experts of weight * expert(x), with sigmoid affinities
    computed in float32 and no residual added.
    Reread: The equations"""
    ex = exercise("04")
    config = ModelConfig.from_preset("tiny", dim=32, moe_inter_dim=16)  # 16 experts in 4 groups, keep 2, top-4
    torch.manual_seed(3)
    moe = MoE(config).eval()
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(std=0.3)
    x = torch.randn(10, config.dim)

    def expert(mlp):
        return mlp.w1.weight.detach(), mlp.w2.weight.detach(), mlp.w3.weight.detach()

    out = ex.moe_forward_naive(x, moe.gate.weight.detach(), moe.gate.bias.detach(),
                               [expert(e) for e in moe.experts], expert(moe.shared_experts), config)
    with torch.no_grad():
        torch.testing.assert_close(out, moe(x), rtol=1e-4, atol=1e-5)


def test_bias_update_sign_rule(exercise):
    """Each bias moves by gamma against the SIGN of its load error (down when above the mean load, up below,
    unchanged at the mean) and the input tensor is not modified.
    Reread: The equations"""
    ex = exercise("04")
    bias = torch.tensor([0.5, 0.5, -0.2, 0.0], dtype=torch.float32)
    load = torch.tensor([9, 1, 3, 3])  # mean 4: overloaded, underloaded, underloaded, underloaded
    new = ex.bias_update(bias, load, 0.001)
    assert new.dtype == torch.float32
    torch.testing.assert_close(new, torch.tensor([0.499, 0.501, -0.199, 0.001]))
    torch.testing.assert_close(bias, torch.tensor([0.5, 0.5, -0.2, 0.0]))  # the input is untouched
    # only the sign of the error counts, and an expert exactly at the mean keeps its bias
    new = ex.bias_update(torch.zeros(3), torch.tensor([1000.0, 2.0, 501.0]), 0.01)
    torch.testing.assert_close(new, torch.tensor([-0.01, 0.01, 0.0]))
