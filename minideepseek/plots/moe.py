"""Figures of chapter 04 (DeepSeekMoE): how the router balances its experts and how one token picks them.

``router_balancing`` simulates the auxiliary-loss-free balancing of the V3 report
(section 2.1.2): a router that prefers some experts for every token is left as it is,
and only the per-expert bias moves, by gamma towards the mean load after every batch.
``group_routing`` draws the node-limited (group-limited) choice of one token at
DeepSeek-V3's routing shape: 256 experts in 8 groups, 4 groups kept, 8 experts chosen.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..balancing import update_expert_biases
from ..config import ModelConfig
from ..moe import Gate, MoE

CHAPTER = "04_moe"


def skewed_moe(config: ModelConfig, lean: torch.Tensor, mean_token: torch.Tensor, seed: int = 0) -> MoE:
    """An MoE layer whose router prefers some experts for every token: expert i's gate row leans
    towards ``mean_token`` by ``lean[i]``, so with tokens scattered around ``mean_token`` the experts
    with a large lean score high whatever the token."""
    generator = torch.Generator().manual_seed(seed)
    moe = MoE(config)
    with torch.no_grad():
        noise = 0.1 * torch.randn(config.n_routed_experts, config.dim, generator=generator)
        moe.gate.weight.copy_(noise + lean[:, None] * mean_token)
        moe.gate.bias.zero_()
    return moe


def simulate_balancing(steps: int = 600, tokens: int = 512, gamma: float = 0.001,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Route ``steps`` fresh batches through a skewed router and apply the package's bias update
    (``balancing.update_expert_biases``: b_i += gamma * sign(mean load - load_i)) after each (V3: gamma = 0.001).

    Only the gate runs: the experts' outputs do not change which experts are chosen.
    Returns the per-expert lean, the load of the first and of the last batch (tokens per expert,
    divided by the mean load), max/mean load per step, and the final bias.
    """
    config = ModelConfig.from_preset("tiny", dim=64, moe_inter_dim=8, n_routed_experts=64, n_expert_groups=8,
                                     n_limited_groups=4, n_activated_experts=6)
    generator = torch.Generator().manual_seed(seed)
    mean_token = torch.randn(config.dim, generator=generator)
    mean_token = mean_token / mean_token.norm()
    lean = 1.5 * torch.linspace(-1, 1, config.n_routed_experts)[torch.randperm(config.n_routed_experts,
                                                                              generator=generator)]
    moe = skewed_moe(config, lean, mean_token, seed)
    imbalance, loads = [], []
    with torch.no_grad():
        for _ in range(steps):
            x = torch.randn(tokens, config.dim, generator=generator) + 2 * mean_token
            _, indices, _ = moe.gate(x)
            load = torch.bincount(indices.flatten(), minlength=config.n_routed_experts)
            moe.tokens_per_expert += load  # what MoE.route counts in training mode
            imbalance.append(update_expert_biases(moe, gamma)["load/max_over_mean"])
            loads.append(load / load.float().mean())
    return {"lean": lean.numpy(), "first_load": loads[0].numpy(), "last_load": loads[-1].numpy(),
            "imbalance": np.array(imbalance), "bias": moe.gate.bias.numpy().copy(), "gamma": gamma,
            "top_k": config.n_activated_experts, "experts": config.n_routed_experts}


def router_balancing(steps: int = 600) -> Figure:
    """Load per expert before/after balancing, max/mean load over the steps, and the learned bias."""
    return draw_balancing(simulate_balancing(steps))


def draw_balancing(run: dict[str, np.ndarray]) -> Figure:
    """The figure of ``router_balancing`` from a ``simulate_balancing`` result."""
    steps = len(run["imbalance"])
    order = np.argsort(run["lean"])  # experts from least to most favoured by the router
    experts = np.arange(len(order))
    fig = Figure(figsize=(15, 4.2))
    loads, curve, bias = fig.subplots(1, 3)

    loads.bar(experts, run["first_load"][order], color="#c44e52", alpha=0.6, label="step 0 (bias = 0)")
    loads.bar(experts, run["last_load"][order], color="#4c72b0", alpha=0.8, label=f"step {steps} (with bias)")
    loads.axhline(1, color="black", linewidth=1, linestyle="--")
    loads.set_xlabel("expert (sorted by how much the router favours it)")
    loads.set_ylabel("tokens routed / mean")
    starved = int((run["first_load"] < 0.1).sum())
    loads.set_title(f"Load per expert: at step 0, {starved} of {run['experts']} get < 10% of a fair share",
                    fontsize=10)
    loads.legend(fontsize=8)

    curve.plot(run["imbalance"], color="#4c72b0", label="with the bias update")
    curve.axhline(run["imbalance"][0], color="#c44e52", linestyle="--", label="without (the router never changes)")
    curve.axhline(run["experts"] / run["top_k"], color="grey", linestyle=":", linewidth=1,
                  label=f"worst case: E/K = {run['experts'] / run['top_k']:.1f}")
    curve.set_ylim(0, run["experts"] / run["top_k"] * 1.1)
    curve.set_xlabel("training step (512 tokens each)")
    curve.set_ylabel("max load / mean load")
    curve.set_title(f"Imbalance: {run['imbalance'][0]:.2f} -> {run['imbalance'][-20:].mean():.2f} "
                    f"(gamma = {run['gamma']})")
    curve.legend(fontsize=8)

    bias.scatter(run["lean"], run["bias"], s=12, color="#4c72b0")
    bias.set_xlabel("how much the router favours the expert (its lean)")
    bias.set_ylabel("bias b_i after the run")
    bias.set_title("The bias learns to cancel the router's preference")
    bias.axhline(0, color="black", linewidth=0.5)
    fig.suptitle(f"Auxiliary-loss-free balancing: {run['experts']} experts, top-{run['top_k']}, "
                 "b_i += gamma * sign(mean load - load_i) after each step", fontsize=10)
    fig.tight_layout()
    return fig


def routing_example(seed: int = 0) -> dict[str, torch.Tensor | int]:
    """One token at V3's routing shape whose best expert sits in a group that is *not* kept.

    Returns its unbiased scores (256,), the bias, the kept groups, the chosen experts and their weights.
    """
    config = ModelConfig.from_preset("v3-671b", dim=64)
    generator = torch.Generator().manual_seed(seed)
    gate = Gate(config)
    with torch.no_grad():
        gate.weight.copy_(0.15 * torch.randn(config.n_routed_experts, config.dim, generator=generator))
        gate.bias.copy_(0.03 * torch.randn(config.n_routed_experts, generator=generator))
        x = torch.randn(256, config.dim, generator=generator)
        weights, indices, scores = gate(x)
        biased = scores + gate.bias
        kept = gate.limit_to_best_groups(biased).isfinite()  # (tokens, experts): in a kept group
    group_scores = biased.unflatten(-1, (config.n_expert_groups, -1)).topk(2, dim=-1).values.sum(-1)  # labels
    # the first token for which the group limit matters: its best expert's group is dropped
    token = next(t for t in range(x.size(0)) if not kept[t, biased[t].argmax()])
    kept_groups = kept[token].view(config.n_expert_groups, -1).any(-1).nonzero().flatten()
    return {"scores": scores[token], "bias": gate.bias.detach().clone(), "group_scores": group_scores[token],
            "kept_groups": kept_groups, "indices": indices[token], "weights": weights[token],
            "n_groups": config.n_expert_groups, "route_scale": config.route_scale}


def group_routing(seed: int = 0) -> Figure:
    """The biased scores of one token's 256 experts by group, its 4 kept groups and its 8 experts."""
    ex = routing_example(seed)
    biased = (ex["scores"] + ex["bias"]).numpy()
    n_experts, n_groups = biased.size, ex["n_groups"]
    per_group = n_experts // n_groups
    kept = set(ex["kept_groups"].tolist())
    chosen = ex["indices"].tolist()
    fig = Figure(figsize=(14, 4.6))
    ax = fig.subplots()
    palette = colormaps["tab10"]
    for g in range(n_groups):
        members = np.arange(g * per_group, (g + 1) * per_group)
        ax.axvspan(members[0] - 0.5, members[-1] + 0.5, color="#d8ecd8" if g in kept else "#eeeeee", zorder=0)
        ax.bar(members, biased[members], color=palette(g), alpha=0.9 if g in kept else 0.35, width=0.8)
        label = "kept" if g in kept else "dropped"
        ax.text(members.mean(), 1.02, f"group {g}: {label}\ntop-2 sum {ex['group_scores'][g]:.3f}",
                ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
    best = int(biased.argmax())
    ax.annotate("best single expert,\nbut its group is dropped", (best, biased[best]),
                xytext=(best, biased.max() + 0.12), ha="center", fontsize=8,
                arrowprops={"arrowstyle": "->", "color": "#c44e52"}, color="#c44e52")
    by_expert = sorted(zip(chosen, ex["weights"].tolist()))
    for rank, (e, w) in enumerate(by_expert):  # alternate label heights so neighbours do not overlap
        ax.scatter([e], [biased[e] + 0.02], marker="v", color="black", zorder=3)
        ax.text(e, biased[e] + 0.05 + 0.07 * (rank % 2), f"{e}: {w:.2f}", ha="center", fontsize=7)
    ax.set_xlim(-0.5, n_experts - 0.5)
    ax.set_ylim(biased.min() - 0.05, biased.max() + 0.25)
    ax.set_xlabel("routed expert (8 groups of 32; V3 places one group per node)")
    ax.set_ylabel("biased score s_i + b_i")
    ax.set_title(f"One token: keep the {len(kept)} groups with the highest top-2 sums, then the 8 best experts "
                 f"inside them (triangles: expert: weight, normalised x {ex['route_scale']})", pad=34, fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"router_balancing": router_balancing, "group_routing": group_routing}
