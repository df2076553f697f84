"""Auxiliary-loss-free load balancing (DeepSeek-V3 report section 2.1.2, eq. 16).

An MoE layer whose router sends most tokens to a few experts wastes the others
(and, spread over GPUs, stalls every device on the busiest one). Earlier MoEs added an
auxiliary loss that pushes the router towards balance, but that loss's gradient fights
the language-modelling loss. V3 instead gives each expert a bias b_i that is added to
its affinity **only to choose** the top-k experts (``Gate``), and moves it outside the
gradient, after every optimizer step, by the sign of the expert's load error:

    b_i <- b_i - gamma   if expert i received more tokens than the mean over experts (overloaded)
    b_i <- b_i + gamma   if it received fewer                                       (underloaded)

gamma is ``config.bias_update_speed`` (0.001 for the first 14.3T tokens of V3, then 0).
The load is counted over the whole batch, gradient-accumulation micro-batches included
(``MoE.tokens_per_expert``). No tokens are ever dropped: every routed token is computed,
so the fraction of dropped capacity is 0 by construction.

The small sequence-wise balance loss that complements the rule is in ``moe.sequence_balance_loss``.
"""

from __future__ import annotations

import torch
from torch import nn

from .moe import MoE


def moe_layers(model: nn.Module) -> dict[str, MoE]:
    """Every MoE layer by its hub layer index: ``{"layer_3": moe, ...}``; MTP depth k is layer n_layers + k - 1.

    An MoE outside a ``Transformer`` keeps its module name (``"moe"`` for a bare MoE).
    """
    n_layers = getattr(getattr(model, "config", None), "n_layers", 0)
    layers = {}
    for name, module in model.named_modules():
        if not isinstance(module, MoE):
            continue
        parts = name.split(".")  # layers.3.ffn, mtp.0.block.ffn (after any wrapper's prefix)
        if "mtp" in parts:
            name = f"layer_{n_layers + int(parts[parts.index('mtp') + 1])}"
        elif "layers" in parts:
            name = f"layer_{parts[parts.index('layers') + 1]}"
        layers[name or "moe"] = module
    return layers


def expert_load_stats(model: nn.Module) -> dict[str, float]:
    """Load statistics from the counts accumulated since the last update (read-only).

    Per MoE layer with counted tokens: ``layer_N/max_over_mean`` (1.0 is perfect balance; the
    busiest expert sets the pace of an expert-parallel step) and ``layer_N/min_over_mean``; then
    ``load/max_over_mean`` averaged over those layers and ``load/dropped_fraction`` (always 0).
    """
    stats: dict[str, float] = {}
    ratios = []
    for name, moe in moe_layers(model).items():
        load = moe.tokens_per_expert.float()
        if load.sum() == 0:
            continue  # nothing routed since the last reset (e.g. only evaluation)
        mean = load.mean()
        stats[f"{name}/max_over_mean"] = (load.max() / mean).item()
        stats[f"{name}/min_over_mean"] = (load.min() / mean).item()
        ratios.append(stats[f"{name}/max_over_mean"])
    if ratios:
        stats["load/max_over_mean"] = sum(ratios) / len(ratios)
        stats["load/dropped_fraction"] = 0.0  # DeepSeek-V3 drops no tokens (report section 2.1.2)
    return stats


@torch.no_grad()
def update_expert_biases(model: nn.Module, speed: float | None = None) -> dict[str, float]:
    """Apply the sign rule to every gate bias, reset the counts, and return the load statistics.

    Call it once per optimizer step, after ``optimizer.step()``. ``speed`` is gamma
    (default ``model.config.bias_update_speed``). Without a gate bias (``config.gate_bias`` False)
    the biases are left alone, but the statistics are still returned and the counts reset.
    """
    if speed is None:
        if not hasattr(model, "config"):
            raise ValueError("update_expert_biases: pass speed= for a module without a .config (ModelConfig)")
        speed = model.config.bias_update_speed
    stats = expert_load_stats(model)
    for moe in moe_layers(model).values():
        load = moe.tokens_per_expert.float()
        if moe.gate.bias is not None:
            # sign(mean - load): +1 underloaded, -1 overloaded, 0 exactly balanced.
            moe.gate.bias += speed * (load.mean() - load).sign()
        moe.tokens_per_expert.zero_()
    return stats
