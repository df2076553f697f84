"""The optimizer: AdamW's parameter groups, the learning-rate schedule, and one optimizer step.

Every loop that trains a DeepSeek-V3 model here (pre-training, SFT, GRPO, the benchmarks and
the chapters' figure runs) ends its step the same way, so it is written once, in ``optimizer_step``:

    stop if the loss or the gradient norm is NaN or inf   (before any weight changes)
    clip the gradient's global norm                 (1.0 in the report)
    AdamW step, then drop the gradients
    sum each expert's token count over the ranks    (one process: nothing to do)
    b_i += gamma * sign(mean load - load_i)         (balancing.update_expert_biases; V3 report eq. 16)

The last line is the auxiliary-loss-free balancing, which moves the router biases *outside*
the optimizer: they are not trained by gradient, so AdamW never sees them. The first line is
why no loop here can go on training a model that has turned into NaN: one non-finite value in
a gradient reaches every weight at the next AdamW step, and every later loss is NaN.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import distributed
from .balancing import update_expert_biases
from .validation import UserError


class NonFiniteError(UserError):
    """A loss or gradient that is NaN or inf: training stops before the step is applied."""


# --8<-- [start:schedule]
def learning_rate(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0 for the first step).

    Linear warm-up to ``max_lr`` over ``warmup_steps`` steps, then a half cosine from ``max_lr``
    down to ``min_lr`` at ``total_steps``:

        lr(s) = max_lr * (s + 1) / warmup                                       s < warmup
        lr(s) = min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (total - warmup)

    A pure function of the step: the schedule's whole state is the step number.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
# --8<-- [end:schedule]


# --8<-- [start:optimizer]
def build_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; ``config`` gives ``lr``, ``betas`` and ``weight_decay``
    (a ``train.TrainConfig``).

    Decay pulls a weight towards zero; that regularises matrices (projections, experts, the
    embedding) but would fight the norms' gains, which must stay near 1. The gate biases are not
    in the optimizer at all: they are not trained by gradient (``requires_grad=False``) but moved
    by ``update_expert_biases``.
    """
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trained if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trained if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type == "cuda" or None)
# --8<-- [end:optimizer]


# --8<-- [start:optimizer_step]
def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None = 1.0,
                   loss: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Apply the accumulated gradients, then move the router biases; returns (gradient norm, expert load).

    ``grad_clip``: the largest global L2 norm of the gradient (``None``: no clipping). The gradient
    norm is measured before clipping. ``loss``: the step's loss, checked with the norm. A NaN or inf
    in either raises ``NonFiniteError`` (naming the optimizer step) before any weight moves. The
    expert load statistics are those of ``balancing.expert_load_stats`` for the tokens routed since
    the previous step.
    """
    grad_norm = distributed.clip_grad_norm_(model, grad_clip if grad_clip is not None else math.inf)
    for what, value in (("loss", loss), ("gradient norm", grad_norm)):
        if value is not None and not torch.isfinite(value).all():
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"the {what} is {value.item()} at optimizer step {steps_taken(optimizer) + 1}: "
                                 "the step was not applied (a learning rate too high, or NaN in the weights)")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    distributed.all_reduce_expert_counts(model)  # the bias rule needs the global batch's load
    return grad_norm, update_expert_biases(model)
# --8<-- [end:optimizer_step]


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """How many steps ``optimizer`` has applied: AdamW counts them per parameter, and a checkpoint keeps the count."""
    for state in optimizer.state.values():
        if "step" in state:
            return int(state["step"])
    return 0
