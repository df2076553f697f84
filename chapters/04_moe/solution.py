"""Chapter 04 reference solutions: DeepSeekMoE and its router as plain functions (see exercise.py)."""

import torch
import torch.nn.functional as F

from minideepseek.config import ModelConfig

Expert = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (w1, w2, w3)


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def gate_route(scores: torch.Tensor, bias: torch.Tensor, n_groups: int, topk_groups: int, topk: int,
               route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    biased = scores + bias
    grouped = biased.unflatten(-1, (n_groups, -1))  # (tokens, groups, experts_per_group)
    group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (tokens, groups)
    kept = group_scores.topk(topk_groups, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
    allowed = grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(1)  # -inf: never 0
    indices = allowed.topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices


def moe_forward_naive(x: torch.Tensor, gate_weight: torch.Tensor, gate_bias: torch.Tensor, experts: list[Expert],
                      shared_expert: Expert, config: ModelConfig) -> torch.Tensor:
    scores = torch.sigmoid(F.linear(x.float(), gate_weight.float()))
    weights, indices = gate_route(scores, gate_bias, config.n_expert_groups, config.n_limited_groups,
                                  config.n_activated_experts, config.route_scale)
    out = swiglu(x, *shared_expert)
    for t in range(x.size(0)):
        for weight, expert in zip(weights[t], indices[t].tolist()):
            out[t] += weight.to(x.dtype) * swiglu(x[t], *experts[expert])
    return out


def bias_update(bias: torch.Tensor, load: torch.Tensor, gamma: float) -> torch.Tensor:
    load = load.float()
    return bias + gamma * torch.sign(load.mean() - load)
