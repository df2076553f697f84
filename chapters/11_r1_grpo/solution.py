"""Chapter 11 reference solutions (graded by tests/exercises/test_11_r1_grpo.py)."""

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, normalise_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    groups = rewards.float().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if normalise_std:
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.flatten()


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      epsilon: float = 0.2) -> torch.Tensor:
    ratio = torch.exp(torch.where(mask, logp - old_logp, 0.0))
    a = advantages.unsqueeze(1)
    objective = torch.minimum(ratio * a, ratio.clamp(1 - epsilon, 1 + epsilon) * a)
    return torch.where(mask, objective, 0.0)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = torch.where(mask, ref_logp - logp, 0.0)
    return torch.exp(x) - x - 1


def grpo_objective(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor, epsilon: float = 0.2, beta: float = 0.04) -> torch.Tensor:
    per_token = clipped_objective(logp, old_logp, advantages, mask, epsilon) - beta * k3_kl(logp, ref_logp, mask)
    per_token = torch.where(mask, per_token, 0.0)
    return (per_token.sum(dim=1) / mask.sum(dim=1)).mean()
