"""Grades chapter 11 (R1, GRPO's objective): chapters/11_r1_grpo/exercise.py or solution.py.

References: hand-computed advantages, ratios and KL values; the exact expectation of k3 over a
categorical distribution; GRPO eq. 3 written as plain Python loops over completions and tokens;
and the package's grpo_loss (tested on its own in tests/test_grpo.py).
"""

import math

import torch

from minideepseek.grpo import GRPOConfig, grpo_loss


def test_group_advantages_by_hand(exercise):
    """Advantages are centred and divided by the UNBIASED std within each group of G adjacent completions only
    (plus eps); an all-equal group gets 0; without normalise_std only centred.
    Reread: The equations"""
    ex = exercise("11")
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # group 1: mean 0.5, unbiased std sqrt(1/3); group 2: all equal
    torch.testing.assert_close(ex.group_advantages(rewards, 4), torch.tensor([a, -a, -a, a, 0, 0, 0, 0]))
    torch.testing.assert_close(ex.group_advantages(rewards, 4, normalise_std=False),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    # groups are the adjacent G completions: with G = 2 every pair here is constant except the first two
    torch.testing.assert_close(ex.group_advantages(rewards, 2, normalise_std=False),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    torch.testing.assert_close(ex.group_advantages(torch.tensor([2.0, 2.0, 5.0, 5.0]), 2), torch.zeros(4))


def test_clipped_objective_by_hand_and_its_gradient(exercise):
    """Per token, min(rho A, clip(rho, 1 - eps, 1 + eps) A) with rho = exp(logp - old_logp): the clipped side of
    the min carries no gradient.
    Reread: The equations"""
    ex = exercise("11")
    old = torch.full((2, 4), math.log(0.5))
    ratios = torch.tensor([[0.5, 1.0, 1.1, 1.5], [0.5, 1.0, 1.1, 1.5]])
    logp = (old + ratios.log()).requires_grad_()
    mask = torch.ones(2, 4, dtype=torch.bool)
    objective = ex.clipped_objective(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2)
    torch.testing.assert_close(objective, torch.tensor([[0.5, 1.0, 1.1, 1.2], [-0.8, -1.0, -1.1, -1.5]]))
    objective.sum().backward()
    # d(rho A)/d logp = rho A on the unclipped side; 0 where the clip is the active side of the min
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5, 1.0, 1.1, 0.0], [0.0, -1.0, -1.1, -1.5]]))


def test_clipped_objective_ignores_padding_even_inf_and_nan(exercise):
    """Padded positions may hold inf or nan: mask the log-ratio BEFORE the exponential so both the value and the
    gradient are 0 there, without nan.
    Reread: Pitfalls"""
    ex = exercise("11")
    logp = torch.tensor([[-1.0, 60.0, float("nan")], [-0.5, -0.2, -0.1]]).requires_grad_()
    old = torch.tensor([[-1.1, -float("inf"), -1.0], [-0.4, -0.3, -0.2]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    objective = ex.clipped_objective(logp, old, torch.tensor([1.0, 2.0]), mask, 0.2)
    assert torch.equal(objective[0, 1:], torch.zeros(2))
    objective.sum().backward()
    assert torch.isfinite(logp.grad).all() and torch.equal(logp.grad[0, 1:], torch.zeros(2))


def test_k3_by_hand_and_its_expectation_is_the_kl(exercise):
    """k3 is exp(x) - x - 1 with x = ref_logp - logp (not the reverse), non-negative per token, and its
    expectation under pi is KL(pi || pi_ref).
    Reread: The equations"""
    ex = exercise("11")
    mask = torch.tensor([[True, True, False]])
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    ref = torch.log(torch.tensor([[0.25, 0.4, 0.0]]))  # log 0 = -inf on a padded position
    expected = torch.tensor([[0.5 + math.log(2) - 1, 2 - math.log(2) - 1, 0.0]])
    torch.testing.assert_close(ex.k3_kl(logp, ref, mask), expected)

    torch.manual_seed(0)
    pi, pi_ref = torch.softmax(torch.randn(6), 0), torch.softmax(torch.randn(6), 0)
    per_token = ex.k3_kl(pi.log().unsqueeze(0), pi_ref.log().unsqueeze(0), torch.ones(1, 6, dtype=torch.bool))[0]
    assert (per_token >= 0).all()
    torch.testing.assert_close((pi * per_token).sum(), (pi * (pi / pi_ref).log()).sum())  # E_pi[k3] = KL(pi||ref)


def naive_grpo_objective(logp, old_logp, ref_logp, advantages, mask, epsilon, beta):
    """GRPO eq. 3 with Python floats, one completion and one token at a time."""
    total = 0.0
    for i in range(logp.size(0)):
        terms = []
        for t in range(logp.size(1)):
            if not mask[i, t]:
                continue
            rho = math.exp(logp[i, t] - old_logp[i, t])
            a = float(advantages[i])
            surrogate = min(rho * a, min(max(rho, 1 - epsilon), 1 + epsilon) * a)
            x = float(ref_logp[i, t] - logp[i, t])
            terms.append(surrogate - beta * (math.exp(x) - x - 1))
        total += sum(terms) / len(terms)
    return total / logp.size(0)


def test_grpo_objective_matches_the_equation_written_as_loops(exercise):
    """J averages, per completion, the clipped objective minus beta * k3 over its real tokens (1/|o_i|), then
    averages the completions: a per-sequence mean, not a mean over all tokens of the batch.
    Reread: The equations"""
    ex = exercise("11")
    torch.manual_seed(1)
    logp, old, ref = (torch.randn(6, 5) * 0.5 - 1.5 for _ in range(3))
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])
    mask = torch.arange(5) < lengths.unsqueeze(1)
    advantages = ex.group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), 3)
    got = ex.grpo_objective(logp, old, ref, advantages, mask, 0.2, 0.04)
    expected = naive_grpo_objective(logp.double(), old.double(), ref.double(), advantages.double(), mask, 0.2, 0.04)
    assert abs(got.item() - expected) < 1e-5
    package_loss, _ = grpo_loss(logp, old, ref, advantages, mask, GRPOConfig(beta=0.04, aggregation="sequence"))
    torch.testing.assert_close(got, -package_loss)
