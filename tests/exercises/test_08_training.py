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
    """lr = max_lr * (step + 1) / warmup during warm-up, then a half cosine from max_lr at step = warmup down to
    min_lr at total_steps, constant after.
    Reread: The equations"""
    ex = exercise("08")
    lr = lambda s: ex.learning_rate(s, 3e-3, 3e-4, 100, 1100)  # noqa: E731
    assert lr(0) == pytest.approx(3e-5) and lr(49) == pytest.approx(1.5e-3) and lr(99) == pytest.approx(3e-3)
    assert lr(100) == pytest.approx(3e-3)
    assert lr(600) == pytest.approx((3e-3 + 3e-4) / 2)  # halfway through the cosine
    assert lr(350) == pytest.approx(3e-4 + 2.7e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(1100) == pytest.approx(3e-4) and lr(5000) == pytest.approx(3e-4)


def test_pack_windows_matches_a_loop(exercise):
    """Windows of seq_len + 1 tokens start every seq_len tokens and overlap by one, so every token after the
    first is a target exactly once; the leftover tail is dropped.
    Reread: The equations"""
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
    """One norm over ALL gradients together; if it exceeds max_norm every gradient is scaled by max_norm / (norm
    + 1e-6); the inputs are not modified.
    Reread: The equations"""
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
    """AdamW: both moments, bias corrections with the step number (1 for the first), and weight decay decoupled
    from the gradient (lr * wd * param subtracted), as torch.optim.AdamW.
    Reread: The equations"""
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
    """Matrices get weight decay, the norms' gains do not, and the gate biases (requires_grad=False) are in
    neither set.
    Reread: Pitfalls"""
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


def test_v3_learning_rate_schedule(exercise):
    """V3's schedule: 2,000 warm-up steps to 2.2e-4, constant to 10T tokens, a cosine to 2.2e-5 over 4.3T tokens,
    then 2.2e-5 for 333B tokens and 7.3e-6 for the last 167B.
    Reread: The equations"""
    ex = exercise("08")
    lr = ex.v3_learning_rate
    assert lr(0, 0) == pytest.approx(1.1e-7) and lr(999, 4e9) == pytest.approx(1.1e-4)
    assert lr(1999, 1e10) == pytest.approx(2.2e-4)
    assert lr(2000, 1e10) == pytest.approx(2.2e-4) and lr(600_000, 9.99e12) == pytest.approx(2.2e-4)
    assert lr(700_000, 10e12) == pytest.approx(2.2e-4)
    assert lr(800_000, 12.15e12) == pytest.approx((2.2e-4 + 2.2e-5) / 2)  # halfway through the cosine
    quarter = 2.2e-5 + 1.98e-4 * (1 + math.cos(math.pi / 4)) / 2
    assert lr(800_000, 11.075e12) == pytest.approx(quarter)
    assert lr(900_000, 14.2999e12) == pytest.approx(2.2e-5, rel=1e-3)
    assert lr(900_000, 14.3e12) == pytest.approx(2.2e-5) and lr(900_000, 14.6e12) == pytest.approx(2.2e-5)
    assert lr(900_000, 14.64e12) == pytest.approx(7.3e-6) and lr(900_000, 14.8e12) == pytest.approx(7.3e-6)
    assert lr(100, 11e12) == pytest.approx(2.2e-4 * 101 / 2000)  # warm-up is counted in steps


def test_v3_batch_size_ramp(exercise):
    """The batch grows from 3,072 to 15,360 sequences over the first 469B tokens, by 3,072 every 469B / 4 tokens
    (3,072, 6,144, 9,216, 12,288), and is 15,360 from 469B tokens on.
    Reread: The equations"""
    ex = exercise("08")
    stage = 469e9 / 4
    assert [ex.v3_batch_size(t) for t in (0, stage - 1, stage, 2 * stage + 1, 3 * stage, 469e9 - 1, 469e9,
                                          14.8e12)] == [3072, 3072, 6144, 9216, 12288, 12288, 15360, 15360]
    assert all(isinstance(ex.v3_batch_size(t), int) for t in (0, 1e12))


def test_bias_update_counts_the_load_over_every_micro_batch(exercise):
    """With gradient accumulation the load is counted over ALL micro-batches of the step (an unchosen expert
    has load 0) and each bias moves once, by gamma against the sign of its error; the input is not modified.
    Reread: Pitfalls"""
    ex = exercise("08")
    bias = torch.tensor([0.1, -0.2, 0.0, 0.3])
    first = torch.tensor([[2, 2], [2, 2]])  # expert 2 twice per token: load [0, 0, 4, 0]
    second = torch.tensor([[0, 1], [0, 0], [0, 1]])  # load [4, 2, 0, 0]; the step: [4, 2, 4, 0], mean 2.5
    new = ex.bias_update_accumulated(bias, [first, second], 0.001)
    torch.testing.assert_close(new, torch.tensor([0.099, -0.199, -0.001, 0.301]))
    torch.testing.assert_close(bias, torch.tensor([0.1, -0.2, 0.0, 0.3]))
    # Two identical micro-batches move the bias by gamma, not 2 gamma.
    twice = ex.bias_update_accumulated(torch.zeros(4), [second, second], 0.01)
    torch.testing.assert_close(twice, torch.tensor([-0.01, -0.01, 0.01, 0.01]))
