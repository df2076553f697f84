"""Chapter 13 reference solutions (graded by tests/exercises/test_13_ablations.py)."""

import math

import torch


def training_flops_per_token(activated_matrix_params: int, n_layers: int, n_heads: int, qk_head_dim: int,
                             v_head_dim: int, seq_len: int) -> float:
    attention = 6 * n_layers * n_heads * (qk_head_dim + v_head_dim) * seq_len
    return 6 * activated_matrix_params + attention


def iso_flop_steps(total_flops: float, tokens_per_step: int, flops_per_token: float) -> int:
    return max(1, round(total_flops / (tokens_per_step * flops_per_token)))


def max_violation(loads: dict[str, torch.Tensor]) -> float | None:
    values = [(load.max().float() / load.float().mean() - 1).item() for load in loads.values() if load.sum() > 0]
    return sum(values) / len(values) if values else None


def expert_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    n_experts, k = scores.size(-1), indices.size(-1)
    scores, indices = scores.reshape(-1, n_experts), indices.reshape(-1, k)  # every token of the batch
    tokens = scores.size(0)
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=0)  # (experts,)
    f = picks * n_experts / (k * tokens)
    p = (scores / scores.sum(-1, keepdim=True)).mean(dim=0)
    return alpha * (f * p).sum()


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, float | int]:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed in both: {sorted(a)} and {sorted(b)}")
    differences = [a[seed] - b[seed] for seed in seeds]
    n = len(differences)
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}
