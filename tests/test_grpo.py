"""GRPO's objective against hand-computed values, and its gradients through our Transformer.

References: numbers worked out by hand in the comments, the exact expectation of the k3
estimator over a small categorical distribution, a naive per-prefix loop for the token
log-probabilities, and gradient checks (zero where the objective says zero).
"""

import math

import pytest
import torch

from minideepseek import grpo as grpo_module
from minideepseek.grpo import (GRPOConfig, GRPOError, Rollout, aggregate, clipped_surrogate, completion_mask,
                               group_advantages, grpo_loss, grpo_step, k3_kl, sample_groups, token_logprobs)
from minideepseek.r1 import build_policy
from minideepseek.reasoning_task import EOS_ID, AdditionTask



@pytest.fixture(scope="module")
def policy():
    return build_policy("tiny", AdditionTask(), seed=0)


# ----------------------------------------------------------------------------- advantages
def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735; group 2: all equal -> 0
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, 4), torch.tensor([a, -a, -a, a, 0, 0, 0, 0]))
    torch.testing.assert_close(group_advantages(rewards, 4, scale="none"),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    # batch std: mean 1.25, squared deviations 0.0625 + 1.5625 + 1.5625 + 0.0625 + 4 * 0.5625 = 5.5, / 7
    b = 0.5 / (math.sqrt(5.5 / 7) + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, 4, scale="batch"), torch.tensor([b, -b, -b, b, 0, 0, 0, 0]))


def test_advantages_are_computed_within_groups_not_across_them():
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])  # two groups of 2, each all-equal
    assert torch.equal(group_advantages(rewards, 2), torch.zeros(4))
    assert group_advantages(rewards, 4).abs().min() > 0.8  # one group of 4 would have a signal


def test_group_advantages_reject_a_batch_that_is_not_whole_groups():
    with pytest.raises(GRPOError, match="multiple of 3"):
        group_advantages(torch.zeros(7), 3)
    with pytest.raises(GRPOError, match="scale"):
        group_advantages(torch.zeros(4), 2, scale="std")


# ----------------------------------------------------------------------------- k3 KL
def test_k3_kl_by_hand():
    mask = torch.ones(1, 3, dtype=torch.bool)
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.2]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.4]]))
    # ratio ref/pi = 0.5: 0.5 - ln 0.5 - 1 = 0.193147; ratio 1: 0; ratio 2: 2 - ln 2 - 1 = 0.306853
    torch.testing.assert_close(k3_kl(logp, ref, mask), torch.tensor([[0.5 + math.log(2) - 1, 0.0, 1 - math.log(2)]]))
    assert k3_kl(logp, ref, torch.tensor([[True, True, False]]))[0, 2] == 0


def test_k3_expectation_is_the_exact_kl_and_every_sample_is_non_negative():
    torch.manual_seed(0)
    pi = torch.softmax(torch.randn(7), 0)
    ref = torch.softmax(torch.randn(7), 0)
    per_token = k3_kl(pi.log().unsqueeze(0), ref.log().unsqueeze(0), torch.ones(1, 7, dtype=torch.bool))[0]
    assert (per_token >= 0).all()
    exact_kl = (pi * (pi / ref).log()).sum()  # KL(pi || ref)
    torch.testing.assert_close((pi * per_token).sum(), exact_kl)  # E_{x ~ pi}[k3(x)]


# ----------------------------------------------------------------------------- clipped surrogate
def test_clipped_surrogate_by_hand():
    ratios = torch.tensor([[0.5, 1.0, 1.1, 1.5]])
    old = torch.full((1, 4), math.log(0.5))
    logp = (old + ratios.log()).requires_grad_()
    mask = torch.ones(1, 4, dtype=torch.bool)
    objective, clipped = clipped_surrogate(logp, old, torch.tensor([1.0]), mask, 0.2, 0.2)
    # A > 0: min(r, clip(r, 0.8, 1.2)) -> 0.5, 1.0, 1.1, 1.2 (only the last one is clipped)
    torch.testing.assert_close(objective, torch.tensor([[0.5, 1.0, 1.1, 1.2]]))
    assert clipped.tolist() == [[False, False, False, True]]
    objective.sum().backward()
    # d(r A)/d logp = r A where the unclipped side is active, 0 where the clip is
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5, 1.0, 1.1, 0.0]]))

    objective, clipped = clipped_surrogate(logp.detach(), old, torch.tensor([-1.0]), mask, 0.2, 0.2)
    # A < 0: min(-r, -clip(r)) -> -0.8 (r = 0.5 clipped up to 0.8), -1.0, -1.1, -1.5
    torch.testing.assert_close(objective, torch.tensor([[-0.8, -1.0, -1.1, -1.5]]))
    assert clipped.tolist() == [[True, False, False, False]]

    objective, _ = clipped_surrogate(logp.detach(), old, torch.tensor([1.0]), mask, 0.2, 0.28)  # DAPO clip-higher
    torch.testing.assert_close(objective[0, 3], torch.tensor(1.28))


# ----------------------------------------------------------------------------- aggregation
def test_aggregations_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert aggregate(per_token, mask, "sequence").item() == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert aggregate(per_token, mask, "token").item() == pytest.approx(10 / 4)
    assert aggregate(per_token, mask, "dr_grpo").item() == pytest.approx(10 / (2 * 4))
    assert aggregate(per_token, mask, "dr_grpo", max_len=10).item() == pytest.approx(10 / (2 * 10))
    full = torch.ones_like(mask)  # equal lengths: sequence and token means coincide
    assert aggregate(per_token, full, "sequence").item() == pytest.approx(aggregate(per_token, full, "token").item())


def test_config_rejects_settings_that_cannot_work():
    with pytest.raises(GRPOError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(GRPOError, match="aggregation"):
        GRPOConfig(aggregation="mean")


# ----------------------------------------------------------------------------- masks and gradients
def test_completion_mask_stops_after_the_first_eos():
    completions = torch.tensor([[5, 6, EOS_ID, EOS_ID, EOS_ID], [5, EOS_ID, 7, EOS_ID, 3], [1, 2, 3, 4, 5]])
    assert completion_mask(completions, EOS_ID).tolist() == [
        [True, True, True, False, False], [True, True, False, False, False], [True] * 5]


def test_identical_rewards_give_zero_policy_gradient():
    torch.manual_seed(0)
    logp = torch.randn(4, 5).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(4, 5)  # a later inner step: ratio != 1
    advantages = group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2)  # group 2 all correct
    config = GRPOConfig(beta=0.0)
    loss, _ = grpo_loss(logp, old, None, advantages, torch.ones(4, 5, dtype=torch.bool), config)
    loss.backward()
    assert torch.equal(logp.grad[2:], torch.zeros(2, 5))
    assert logp.grad[:2].abs().sum() > 0


def test_padded_tokens_give_zero_gradient_and_no_nan():
    logp = torch.tensor([[-1.0, -2.0, 50.0, float("nan")], [-0.5, -0.1, -3.0, -1.0]]).requires_grad_()
    old = torch.tensor([[-1.2, -1.5, -float("inf"), -float("inf")], [-0.4, -0.3, -2.0, -1.5]])
    ref = torch.tensor([[-1.1, -1.9, -float("inf"), 80.0], [-0.6, -0.2, -2.5, -1.2]])
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    for aggregation in ("sequence", "token", "dr_grpo"):
        logp.grad = None
        loss, stats = grpo_loss(logp, old, ref, torch.tensor([1.0, -1.0]), mask,
                                GRPOConfig(beta=0.04, aggregation=aggregation))
        loss.backward()
        assert torch.isfinite(loss) and math.isfinite(stats["kl"])
        assert torch.isfinite(logp.grad).all()
        assert torch.equal(logp.grad[0, 2:], torch.zeros(2))
        assert (logp.grad[mask] != 0).all()


def test_tokens_after_eos_do_not_change_the_loss_through_the_model(policy):
    torch.manual_seed(1)
    prompts = torch.randint(1, 11, (4, 6))
    completions = torch.randint(1, 18, (4, 10))
    completions[:, 6] = EOS_ID
    mask = completion_mask(completions, EOS_ID)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    losses = []
    for garbage in (0, 1):
        changed = completions.clone()
        changed[:, 7:] = torch.randint(0, 18, (4, 3), generator=torch.Generator().manual_seed(garbage))
        logp = token_logprobs(policy, prompts, changed)
        loss, _ = grpo_loss(logp, logp.detach() - 0.1, logp.detach() + 0.2, advantages, mask, GRPOConfig())
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])


def test_token_logprobs_match_a_naive_loop_over_prefixes(policy):
    torch.manual_seed(2)
    prompts = torch.randint(1, 11, (2, 6))
    completions = torch.randint(0, 18, (2, 5))
    fast = token_logprobs(policy, prompts, completions, temperature=0.7)
    with torch.no_grad():
        for row in range(2):
            for t in range(5):
                prefix = torch.cat([prompts[row], completions[row, :t]]).unsqueeze(0)
                expected = (policy(prefix)[0, -1] / 0.7).log_softmax(-1)[completions[row, t]]
                torch.testing.assert_close(fast[row, t], expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the GRPO step
def fixed_rollout(rewards: list[float], group_size: int, seed: int = 3) -> Rollout:
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, 11, (len(rewards) // group_size, 6), generator=generator)
    prompts = prompts.repeat_interleave(group_size, 0)
    completions = torch.randint(1, 18, (len(rewards), 8), generator=generator)
    completions[:, 5:] = EOS_ID
    rewards = torch.tensor(rewards, dtype=torch.float32)
    return Rollout(prompts, completions, completion_mask(completions, EOS_ID), rewards, {"accuracy": rewards},
                   group_advantages(rewards, group_size), torch.zeros(len(rewards), dtype=torch.bool), group_size)


def test_ratio_is_exactly_one_on_the_first_inner_step(policy, monkeypatch):
    import copy

    model = copy.deepcopy(policy)
    seen = []

    def spy(logp, old_logp, *args):
        seen.append(torch.exp(logp.detach() - old_logp))
        return grpo_loss(logp, old_logp, *args)

    monkeypatch.setattr(grpo_module, "grpo_loss", spy)
    config = GRPOConfig(inner_steps=3, lr=1e-2, beta=0.04)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    metrics = grpo_step(model, copy.deepcopy(policy), optimizer, fixed_rollout([1, 0, 0, 1, 0, 1, 1, 1], 4), config)
    assert len(seen) == 3
    assert torch.equal(seen[0], torch.ones_like(seen[0]))  # pi_theta == pi_old before any update
    assert not torch.equal(seen[1], torch.ones_like(seen[1]))
    assert metrics["clip_fraction"] > 0  # lr 1e-2: later inner steps leave the trust region


def test_all_equal_groups_leave_the_policy_unchanged(policy):
    """Without KL, a batch whose groups are each all right or all wrong has no learning signal at all."""
    import copy

    model = copy.deepcopy(policy)
    before = copy.deepcopy(model.state_dict())
    config = GRPOConfig(inner_steps=2, beta=0.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    metrics = grpo_step(model, None, optimizer, fixed_rollout([1, 1, 1, 1, 0, 0, 0, 0], 4), config)
    assert metrics["frac_zero_std"] == 1.0 and metrics["grad_norm"] == 0.0
    for name, value in model.state_dict().items():
        if not name.endswith("gate.bias"):  # the balancing bias moves by load, not by gradient
            assert torch.equal(value, before[name]), name


def test_sampling_is_deterministic_and_groups_are_adjacent(policy):
    prompts = torch.tensor([[1, 2, 11, 3, 4, 12], [5, 6, 11, 7, 8, 12]])
    repeated, first = sample_groups(policy, prompts, 3, 8, 1.0, EOS_ID, seed=7)
    _, second = sample_groups(policy, prompts, 3, 8, 1.0, EOS_ID, seed=7)
    assert torch.equal(first, second) and first.shape == (6, 8)
    assert torch.equal(repeated, prompts.repeat_interleave(3, 0))
