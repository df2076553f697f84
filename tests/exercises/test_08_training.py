"""Grades chapter 08 (training): chapters/08_training/exercise.py or solution.py.

References: the schedule's closed-form values, windows cut by a plain loop, torch's own
``clip_grad_norm_`` and ``torch.optim.AdamW``, and the rule "decay matrices only" checked on a
tiny DeepSeek-V3 model by the parameters' names.
"""

import math

import pytest
import torch

from minideepseek import ModelConfig, Transformer


def test_learning_rate_warm_up_and_cosine(exercise):
    ex = exercise("08")
    lr = lambda s: ex.learning_rate(s, 3e-3, 3e-4, 100, 1100)  # noqa: E731
    assert lr(0) == pytest.approx(3e-5) and lr(49) == pytest.approx(1.5e-3) and lr(99) == pytest.approx(3e-3)
    assert lr(100) == pytest.approx(3e-3)
    assert lr(600) == pytest.approx((3e-3 + 3e-4) / 2)  # halfway through the cosine
    assert lr(350) == pytest.approx(3e-4 + 2.7e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(1100) == pytest.approx(3e-4) and lr(5000) == pytest.approx(3e-4)


def test_pack_windows_matches_a_loop(exercise):
    ex = exercise("08")
    tokens = torch.arange(100, 153)  # 53 tokens
    windows = ex.pack_windows(tokens, 8)
    expected = []
    start = 0
    while start + 9 <= 53:
        expected.append(tokens[start:start + 9].tolist())
        start += 8
    assert windows.tolist() == expected  # 6 windows; the last 4 tokens are dropped
    targets = windows[:, 1:].flatten().tolist()
    assert targets == tokens[1:49].tolist()  # every token after the first is a target exactly once


def test_clip_by_global_norm_matches_torch(exercise):
    ex = exercise("08")
    torch.manual_seed(0)
    grads = [torch.randn(4, 5), torch.randn(7), torch.randn(2, 3, 2)]
    originals = [g.clone() for g in grads]
    for max_norm in (0.5, 1e3):
        clipped, total = ex.clip_by_global_norm(grads, max_norm)
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        expected_total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        assert total.item() == pytest.approx(expected_total.item(), rel=1e-5)
        for c, p in zip(clipped, params):
            torch.testing.assert_close(c, p.grad)
    assert all(torch.equal(g, o) for g, o in zip(grads, originals))  # inputs untouched


def test_adamw_step_matches_torch_over_several_steps(exercise):
    ex = exercise("08")
    torch.manual_seed(1)
    start = torch.randn(6, 4)
    reference = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.AdamW([reference], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    param, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for step in range(1, 6):
        grad = torch.randn(6, 4)
        reference.grad = grad.clone()
        optimizer.step()
        param, m, v = ex.adamw_step(param, grad, m, v, step, 0.01, (0.9, 0.95), 1e-8, 0.1)
        torch.testing.assert_close(param, reference.detach(), rtol=1e-5, atol=1e-6)
    state = optimizer.state[reference]
    torch.testing.assert_close(m, state["exp_avg"])
    torch.testing.assert_close(v, state["exp_avg_sq"])


def test_decay_split_decays_matrices_only(exercise):
    ex = exercise("08")
    model = Transformer(ModelConfig.from_preset("tiny", dim=32, inter_dim=64, moe_inter_dim=16, n_layers=2,
                                                vocab_size=64))
    decay, no_decay = ex.decay_split(model)
    assert {"embed.weight", "head.weight", "layers.0.attn.wq_a.weight", "layers.1.ffn.gate.weight",
            "layers.1.ffn.experts.3.w2.weight", "mtp.0.eh_proj.weight"} <= decay
    assert {"norm.weight", "layers.0.attn_norm.weight", "layers.0.attn.kv_norm.weight",
            "mtp.0.enorm.weight"} <= no_decay
    assert not decay & no_decay
    everything = {name for name, _ in model.named_parameters()}
    assert everything - decay - no_decay == {"layers.1.ffn.gate.bias", "mtp.0.block.ffn.gate.bias"}
