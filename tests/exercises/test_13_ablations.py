"""Grades chapter 13 (the ablation lab): chapters/13_ablations/exercise.py or solution.py.

References: hand-computed budgets, FLOPs, loads and seed differences; the balance loss written as
loops over tokens; and the package's own arithmetic (params.training_flops_per_token on real
configurations, ablate.budget / steps_for / max_violation / summarise, moe.expert_balance_loss and
the loss of an MoE layer of the auxiliary-loss variant).
"""

import math

import pytest
import torch

from minideepseek import ModelConfig, Transformer, ablate
from minideepseek.moe import MoE, expert_balance_loss as package_expert_balance_loss, sequence_balance_loss
from minideepseek.params import count_parameters, training_flops_per_token as package_flops


# ----------------------------------------------------------------------------- FLOPs per token
def test_training_flops_per_token_by_hand(exercise):
    """FLOPs per training token are 6 N (2 per multiply-add, times forward + two backward matmuls) plus
    6 L H (d_qk + d_v) T for attention over the whole sequence, not halved for the causal mask.
    Reread: Equal FLOPs, not equal steps"""
    ex = exercise("13")
    # 6 * 1000 + 6 * 2 * 4 * (3 + 2) * 10 = 6000 + 2400
    assert ex.training_flops_per_token(1000, 2, 4, 3, 2, 10) == pytest.approx(8400, rel=1e-12)
    assert ex.training_flops_per_token(1000, 0, 4, 3, 2, 10) == pytest.approx(6000, rel=1e-12)
    assert ex.training_flops_per_token(0, 3, 1, 1, 1, 1) == pytest.approx(36, rel=1e-12)
    # the attention term grows linearly with the sequence, the parameter term does not
    short, long = (ex.training_flops_per_token(5_000_000, 12, 16, 192, 128, t) for t in (1024, 4096))
    assert long - short == pytest.approx(6 * 12 * 16 * (192 + 128) * 3072, rel=1e-12)
    assert short == pytest.approx(6 * 5_000_000 + 6 * 12 * 16 * 320 * 1024, rel=1e-12)


@pytest.mark.parametrize("changes", [{}, {"attention": "mha"}, {"attention": "gqa", "n_kv_heads": 2},
                                     {"attention": "mqa"}, {"dense_ffn_dim": 320},
                                     {"n_routed_experts": 8, "n_activated_experts": 2, "n_shared_experts": 0,
                                      "moe_inter_dim": 160, "n_expert_groups": 1, "n_limited_groups": 1}],
                         ids=["mla", "mha", "gqa-2", "mqa", "dense", "moe-coarse"])
def test_training_flops_per_token_matches_the_package(exercise, changes):
    """With N the activated parameters without the input embedding (count_parameters) and L, H, d_qk, d_v
    from the configuration, the formula must give the package's FLOPs for every ablation variant.
    Reread: Equal FLOPs, not equal steps"""
    ex = exercise("13")
    config = ModelConfig.from_preset("tiny", n_mtp_layers=0, **changes)
    n_active = count_parameters(config).activated_without_embedding
    for seq_len in (128, 1000):
        got = ex.training_flops_per_token(n_active, config.n_layers, config.n_heads, config.qk_head_dim,
                                          config.v_head_dim, seq_len)
        assert got == pytest.approx(package_flops(config, seq_len), rel=1e-12), f"seq_len {seq_len}"


# ----------------------------------------------------------------------------- iso-FLOP steps
def test_iso_flop_steps_by_hand(exercise):
    """steps = budget / (tokens per step x FLOPs per token), rounded to the nearest integer, and at least 1
    so that a variant too costly for the budget still trains.
    Reread: Equal FLOPs, not equal steps"""
    ex = exercise("13")
    steps = ex.iso_flop_steps(10 * 1024 * 1000.0, 1024, 1000.0)
    assert steps == 10 and isinstance(steps, int)
    assert ex.iso_flop_steps(2.7 * 1024 * 1000, 1024, 1000) == 3  # rounded, not floored
    assert ex.iso_flop_steps(2.3 * 1024 * 1000, 1024, 1000) == 2  # nor ceiled
    assert ex.iso_flop_steps(1e9, 1024, 3.5e5) == 3  # 2.79 steps
    assert ex.iso_flop_steps(1e6, 1024, 3.5e5) == 1  # 0.003 steps: still one
    assert ex.iso_flop_steps(0.4 * 1024 * 1000, 1024, 1000) == 1
    # twice the FLOPs per token, half the steps: each variant sees tokens in inverse proportion to its cost
    assert ex.iso_flop_steps(600 * 256 * 2e6, 256, 4e6) == 300


@pytest.mark.parametrize("study", sorted(ablate.STUDIES))
def test_iso_flop_steps_match_the_study_budget(exercise, study):
    """Every variant of a study gets the steps that spend the FLOPs V3's variant spends in --steps steps
    (ablate.budget and ablate.steps_for); V3's variant gets exactly --steps.
    Reread: Equal FLOPs, not equal steps"""
    ex = exercise("13")
    vocab_size = ModelConfig.from_preset("tiny").vocab_size
    for budget_args in ({"steps": 1}, {"steps": 7}, {"steps": 300}, {"flops": 3e10}, {"flops": 1e6}):
        settings = ablate.Settings(study, **budget_args, batch_size=8, seq_len=128)
        total = ablate.budget(settings, vocab_size)
        for variant in ablate.STUDIES[study].variants:
            config = ablate.STUDIES[study].model_config("tiny", variant, vocab_size=vocab_size)
            per_token = package_flops(config, settings.seq_len)
            steps = ex.iso_flop_steps(total, settings.tokens_per_step, per_token)
            assert steps == ablate.steps_for(settings, config, total), (variant.slug, budget_args)
            if variant is ablate.STUDIES[study].reference and "steps" in budget_args:
                assert steps == budget_args["steps"]


# ----------------------------------------------------------------------------- MaxVio
def test_max_violation_by_hand(exercise):
    """MaxVio is max load / mean load - 1 for each layer on its own (0 when balanced, 1 when the busiest expert
    gets twice its share), then the mean over layers; empty layers are skipped, no layer gives None.
    Reread: Measuring balance: MaxVio"""
    ex = exercise("13")
    balanced = {"layer_1": torch.tensor([5, 5, 5, 5])}
    assert ex.max_violation(balanced) == pytest.approx(0.0, abs=1e-7)
    assert ex.max_violation({"layer_1": torch.tensor([6, 2, 2, 2])}) == pytest.approx(1.0, rel=1e-6)
    assert ex.max_violation({"layer_1": torch.tensor([12, 0, 0, 0])}) == pytest.approx(3.0, rel=1e-6)
    # per layer, then averaged: the two layers overload different experts (pooled, the loads look balanced)
    two = {"layer_1": torch.tensor([6, 2, 2, 2]), "layer_2": torch.tensor([2, 2, 2, 6]),
           "layer_3": torch.tensor([5, 5, 5, 5])}
    assert ex.max_violation(two) == pytest.approx(2 / 3, rel=1e-6)
    # other sizes: 9/2 - 1 = 3.5 (16 tokens, 8 experts) and 4/2 - 1 = 1 (12 tokens, 6 experts) -> 2.25
    assert ex.max_violation({"a": torch.tensor([9, 3, 2, 1, 0, 0, 0, 1]),
                             "b": torch.tensor([4, 3, 2, 1, 1, 1])}) == pytest.approx(2.25, rel=1e-6)
    # a layer that routed nothing is left out; without MoE layers there is nothing to measure
    assert ex.max_violation({"layer_1": torch.tensor([6, 2, 2, 2]),
                             "layer_2": torch.zeros(4, dtype=torch.long)}) == pytest.approx(1.0, rel=1e-6)
    assert ex.max_violation({}) is None


def test_max_violation_matches_the_package(exercise):
    """On random loads and on the expert loads of a real model's validation tokens (ablate.expert_loads),
    MaxVio must equal ablate.max_violation, which results.json records for every run.
    Reread: Measuring balance: MaxVio"""
    ex = exercise("13")
    generator = torch.Generator().manual_seed(13)
    for n_layers in (1, 3, 6):
        loads = {f"layer_{i}": torch.randint(0, 50, (16,), generator=generator) for i in range(n_layers)}
        assert ex.max_violation(loads) == pytest.approx(ablate.max_violation(loads), rel=1e-6)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("tiny", n_mtp_layers=0))
    batch = torch.randint(0, model.config.vocab_size, (2, 33), generator=generator)
    loads = ablate.expert_loads(model, [batch], torch.device("cpu"))
    assert len(loads) == 3 and all(load.dtype == torch.long for load in loads.values())
    got = ex.max_violation(loads)
    assert isinstance(got, float)
    assert got == pytest.approx(ablate.max_violation(loads), rel=1e-6)


# ----------------------------------------------------------------------------- the auxiliary loss
def naive_expert_balance_loss(scores, indices, alpha):
    """alpha * sum_i f_i P_i with every token of the batch in one pool, as loops."""
    scores, indices = scores.reshape(-1, scores.size(-1)), indices.reshape(-1, indices.size(-1))
    tokens, n_experts = scores.shape
    k = indices.size(-1)
    total = 0.0
    for i in range(n_experts):
        count = sum(int(i in indices[t].tolist()) for t in range(tokens))
        f = n_experts / (k * tokens) * count
        p = sum((scores[t, i] / scores[t].sum()).item() for t in range(tokens)) / tokens
        total += alpha * f * p
    return total


def test_expert_balance_loss_by_loops(exercise):
    """f_i = E / (K T) x (tokens that chose expert i), P_i = mean over tokens of s_i / sum_j s_j, L = alpha
    sum_i f_i P_i over every token of the batch; a uniform router gives alpha, a collapsed one alpha E / K.
    Reread: The auxiliary loss V3 removed"""
    ex = exercise("13")
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 6, 8, generator=generator, requires_grad=True)
    indices = torch.rand(2, 6, 8, generator=generator).topk(3, dim=-1).indices
    loss = ex.expert_balance_loss(scores, indices, 0.01)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(naive_expert_balance_loss(scores.detach(), indices, 0.01), rel=1e-5)
    loss.backward()
    assert scores.grad.abs().sum() > 0
    flat = ex.expert_balance_loss(scores.detach().flatten(0, 1), indices.flatten(0, 1), 0.01)  # (tokens, experts)
    assert flat.item() == pytest.approx(loss.item(), rel=1e-6)
    # uniform: every expert chosen equally often, equal scores -> alpha; collapsed on 2 of 8: alpha * 8 / 2
    uniform = ex.expert_balance_loss(torch.ones(4, 8), torch.arange(8).view(4, 2), 0.01)
    assert uniform.item() == pytest.approx(0.01, rel=1e-6)
    collapsed_scores = torch.full((4, 8), 1e-9)
    collapsed_scores[:, :2] = 0.5
    collapsed = ex.expert_balance_loss(collapsed_scores, torch.tensor([0, 1]).expand(4, 2), 0.01)
    assert collapsed.item() == pytest.approx(0.01 * 8 / 2, rel=1e-6)
    # scaling every token's scores leaves P, and the loss, unchanged
    scaled = ex.expert_balance_loss(scores.detach() * torch.rand(2, 6, 1, generator=generator) * 5, indices, 0.01)
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-5)


def test_expert_balance_loss_pools_the_whole_batch_like_the_package(exercise):
    """The V2 / GShard loss pools every token of the batch (moe.expert_balance_loss, and an MoE layer with
    expert_balance_loss_alpha), unlike V3's sequence-wise loss, which averages one loss per sequence.
    Reread: The auxiliary loss V3 removed"""
    ex = exercise("13")
    generator = torch.Generator().manual_seed(1)
    # sequence 0 overloads experts 0-1, sequence 1 experts 2-3: each is imbalanced, the batch less so
    scores = torch.rand(2, 5, 6, generator=generator) + 0.1
    indices = torch.stack([torch.tensor([0, 1]).expand(5, 2), torch.tensor([2, 3]).expand(5, 2)])
    expected = package_expert_balance_loss(scores.flatten(0, 1), indices.flatten(0, 1), 0.01)
    per_sequence = sequence_balance_loss(scores, indices, 0.01)
    assert abs(expected.item() - per_sequence.item()) > 1e-3  # the two losses differ on this batch
    assert ex.expert_balance_loss(scores, indices, 0.01).item() == pytest.approx(expected.item(), rel=1e-6)
    # the loss an MoE layer of the aux-loss variant adds in training, from its own gate's scores and picks
    torch.manual_seed(2)
    config = ModelConfig.from_preset("tiny", balance_loss_alpha=0.0, expert_balance_loss_alpha=0.01, gate_bias=False)
    moe = MoE(config).train()
    seen = {}
    handle = moe.gate.register_forward_hook(lambda gate, inputs, outputs: seen.update(indices=outputs[1],
                                                                                     scores=outputs[2]))
    moe(torch.randn(3, 7, config.dim))
    handle.remove()
    got = ex.expert_balance_loss(seen["scores"].view(3, 7, -1), seen["indices"].view(3, 7, -1),
                                 config.expert_balance_loss_alpha)
    torch.testing.assert_close(got, moe.balance_loss, rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------- seeds
def test_paired_difference_by_hand(exercise):
    """The differences are taken seed by seed over the seeds both variants have (by key, not by position);
    then their mean and SAMPLE standard deviation (n - 1), 0 for one seed; no common seed is an error.
    Reread: Seeds and paired differences"""
    ex = exercise("13")
    a = {0: 1.0, 1: 2.0, 2: 4.0, 7: 100.0}
    b = {2: 3.0, 9: -5.0, 1: 1.0, 0: 0.5}  # another order, and seeds 7 and 9 unpaired
    # differences 0.5, 1.0, 1.0: mean 5/6, sample variance (1/9 + 1/36 + 1/36) / 2 = 1/12
    got = ex.paired_difference(a, b)
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(5 / 6, rel=1e-12)
    assert got["std"] == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    one = ex.paired_difference({4: 2.5}, {4: 2.0, 5: 9.0})
    assert one == pytest.approx({"mean": 0.5, "std": 0.0, "n": 1})
    # what the seeds share cancels: b = a - 0.1 seed by seed gives std 0, however much the seeds differ
    shifted = ex.paired_difference({s: 10.0 * s for s in range(5)}, {s: 10.0 * s - 0.1 for s in range(5)})
    assert shifted["mean"] == pytest.approx(0.1, rel=1e-9) and shifted["std"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        ex.paired_difference({0: 1.0}, {1: 1.0})


def test_paired_difference_matches_the_study_summary(exercise):
    """A study's comparisons (ablate.summarise) are paired differences from V3's variant over the seeds both
    variants ran: the same mean, sample std and n.
    Reread: Seeds and paired differences"""
    ex = exercise("13")
    study = ablate.STUDIES["attention"]
    generator = torch.Generator().manual_seed(3)
    runs = []
    for variant, seeds in (("mla", [0, 1, 2, 3]), ("mha", [2, 0, 1, 5]), ("mqa", [3, 1])):
        for seed in seeds:
            value = 2.0 + 0.3 * seed + 0.05 * torch.rand((), generator=generator).item()
            runs.append({"variant": variant, "seed": seed, "val_bpb": value, "tokens_per_s": 1000.0 + seed})
    _, comparisons = ablate.summarise(study, runs)
    bpb = {v: {r["seed"]: r["val_bpb"] for r in runs if r["variant"] == v} for v in ("mla", "mha", "mqa")}
    for variant in ("mha", "mqa"):
        got = ex.paired_difference(bpb[variant], bpb["mla"])
        expected = {key: comparisons[f"{variant}_minus_mla_val_bpb"][key] for key in ("mean", "std", "n")}
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
