"""Chapter 08 reference solutions: the pieces of a training step as plain functions (see exercise.py)."""

import math

import torch


def learning_rate(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def pack_windows(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    n_windows = (tokens.numel() - 1) // seq_len
    return tokens[:n_windows * seq_len + 1].unfold(0, seq_len + 1, seq_len)


def clip_by_global_norm(grads: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).float()
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    return [g * scale for g in grads], total


def adamw_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
               lr: float, betas: tuple[float, float], eps: float, weight_decay: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    beta1, beta2 = betas
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return param - lr * weight_decay * param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def decay_split(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return {n for n, p in trained if p.dim() >= 2}, {n for n, p in trained if p.dim() < 2}


def v3_learning_rate(step: int, tokens: float) -> float:
    peak, low = 2.2e-4, 2.2e-5
    if step < 2000:
        return peak * (step + 1) / 2000
    if tokens < 10e12:
        return peak
    if tokens < 14.3e12:
        progress = (tokens - 10e12) / 4.3e12
        return low + (peak - low) * (1 + math.cos(math.pi * progress)) / 2
    return low if tokens < 14.633e12 else 7.3e-6


def v3_batch_size(tokens: float) -> int:
    return min(15360, 3072 * (1 + math.floor(4 * tokens / 469e9)))


def bias_update_accumulated(bias: torch.Tensor, micro_batch_indices: list[torch.Tensor], gamma: float
                            ) -> torch.Tensor:
    load = sum(torch.bincount(indices.flatten(), minlength=bias.numel()) for indices in micro_batch_indices)
    load = load.float()
    return bias + gamma * torch.sign(load.mean() - load)
