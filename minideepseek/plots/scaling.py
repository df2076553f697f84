"""Figures of chapter 12 (scaling out): pipeline schedules, their bubbles, node-limited routing, traffic.

``pipeline_schedules`` draws the simulated timelines of 1F1B, ZB1P and DualPipe on
8 ranks with 20 micro-batches (DualPipe: 10 from each end, as in the V3 report's
Figure 5), with the bubble measured on the timeline next to Table 2's formula.
``bubble_vs_stages`` repeats the measurement for 2 to 16 ranks. ``nodes_per_token``
shows how many nodes a token's 8 experts land on without V3's 4-node limit, and
``communication_volume`` the bytes each parallelism moves for the 671B config.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..comm_volume import expected_nodes_per_token, nodes_per_token, volume_table
from ..config import ModelConfig
from ..dualpipe import SCHEDULES, Costs, simulate, table2_bubble

CHAPTER = "12_scaling_out"

# The costs drawn: a forward and a weight-gradient pass one unit each, a full backward two
# (so backward-for-input = forward), and an overlapped forward+backward 2.5 instead of 3.
COSTS = Costs(F=1.0, B=2.0, W=1.0, FB=2.5)
COLORS = {  # (direction 0, direction 1)
    "F": ("#f4a259", "#f9d8a7"), "B": ("#4f86c6", "#a9c6ea"), "I": ("#7fb3e0", "#cfe1f3"),
    "W": ("#5cb85c", "#5cb85c"),
}


def draw_timeline(ax, timeline, title: str, length: float | None = None, fontsize: float = 9) -> None:
    """One row per rank, one box per op; an overlapped F&B box is split in its two colours.

    The micro-batch number is written in every single-op box: across it when it fits, rotated when it
    has two digits and the box is under 2 time units wide (too narrow for them side by side).
    """
    for rank, slots in enumerate(timeline.ranks):
        for slot in slots:
            width = slot.end - slot.start
            y = len(timeline.ranks) - 1 - rank
            parts = [(slot.op.kind if len(slot.op.tasks) == 1 else task.kind, task) for task in slot.op.tasks]
            for i, (kind, task) in enumerate(parts):
                share = width / len(parts)
                ax.add_patch(Rectangle((slot.start + i * share, y), share, 0.9,
                                       facecolor=COLORS[kind][task.direction], edgecolor="white", linewidth=0.5))
            if len(parts) == 2:  # the report draws overlapped chunks with a shared black border
                ax.add_patch(Rectangle((slot.start, y), width, 0.9, fill=False, edgecolor="black", linewidth=1.0))
            if width >= 0.9 and len(parts) == 1:
                label = str(parts[0][1].micro_batch)
                ax.text(slot.start + width / 2, y + 0.45, label, ha="center", va="center", fontsize=fontsize,
                        rotation=90 if len(label) > 1 and width < 2 else 0, clip_on=True)
    ax.set_xlim(0, length or timeline.makespan)
    ax.set_ylim(0, len(timeline.ranks))
    ax.set_yticks(np.arange(len(timeline.ranks)) + 0.45)
    ax.set_yticklabels([f"rank {r}" for r in reversed(range(len(timeline.ranks)))], fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.tick_params(axis="y", length=0)
    ax.set_title(title, fontsize=11, loc="left")


def schedule_legend() -> list[Patch]:
    """Legend entries for the colours of ``draw_timeline``."""
    return [Patch(facecolor=COLORS["F"][0], label="F: forward"),
            Patch(facecolor=COLORS["B"][0], label="B: backward"),
            Patch(facecolor=COLORS["I"][0], label="backward for input only"),
            Patch(facecolor=COLORS["W"][0], label="W: weight gradient"),
            Patch(facecolor=COLORS["F"][1], label="pale: reverse direction"),
            Patch(facecolor="white", edgecolor="black", label="black frame: overlapped F&B")]


def pipeline_schedules(pp: int = 8, n: int = 20) -> Figure:
    fig = Figure(figsize=(10, 11), layout="constrained")
    axes = fig.subplots(3, 1)
    timelines = {method: simulate(schedule(pp, n), COSTS) for method, schedule in SCHEDULES.items()}
    length = max(t.makespan for t in timelines.values())
    for ax, (method, timeline) in zip(axes, timelines.items()):
        bubble = max(timeline.bubble(r) for r in range(pp))
        draw_timeline(ax, timeline, f"{method}: {pp} ranks, {n} micro-batches; bubble on the timeline {bubble:g}, "
                                    f"Table 2 gives {table2_bubble(method, pp, COSTS):g}; "
                                    f"makespan {timeline.makespan:g}", length)
    axes[-1].set_xlabel(f"time (F = {COSTS.F:g}, B = {COSTS.B:g}, W = {COSTS.W:g}, F&B = {COSTS.FB:g}); "
                        "numbers: micro-batch", fontsize=11)
    fig.legend(handles=schedule_legend(), loc="outside lower center", ncol=3, fontsize=10)
    return fig


def bubble_vs_stages(stages: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)) -> Figure:
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for method, schedule in SCHEDULES.items():
        simulated = [max(simulate(schedule(pp, 2 * pp), COSTS).bubble(r) for r in range(pp)) for pp in stages]
        line, = ax.plot(stages, [table2_bubble(method, pp, COSTS) for pp in stages], label=f"{method}: Table 2")
        ax.plot(stages, simulated, "o", color=line.get_color(), label=f"{method}: simulated")
    ax.set_xlabel("pipeline ranks PP (2 PP micro-batches)")
    ax.set_ylabel("bubble (time units, busiest rank)")
    ax.set_title(f"Pipeline bubble, F={COSTS.F:g} B={COSTS.B:g} W={COSTS.W:g} F&B={COSTS.FB:g}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def nodes_per_token_figure() -> Figure:
    config = ModelConfig.from_preset("v3-671b")
    experts, nodes, k = config.n_routed_experts, config.n_expert_groups, config.n_activated_experts
    distribution = nodes_per_token(experts, nodes, k)
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.subplots()
    counts = list(range(1, nodes + 1))
    ax.bar(counts, [float(distribution.get(j, 0)) for j in counts], color="#4f86c6")
    ax.axvline(config.n_limited_groups + 0.5, color="black", linestyle="--")
    beyond = float(sum(p for j, p in distribution.items() if j > config.n_limited_groups))
    ax.text(config.n_limited_groups + 0.4, 0.4, f"V3's limit: {config.n_limited_groups} nodes\n"
            f"({beyond:.0%} of unrestricted tokens exceed it) ", fontsize=8, ha="right")
    mean = expected_nodes_per_token(experts, nodes, k)
    ax.set_title(f"Nodes a token's {k} experts occupy, any {k} of {experts} equally likely\n"
                 f"(mean {mean:.2f} IB copies without the limit, at most {config.n_limited_groups} with it)",
                 fontsize=10)
    ax.set_xlabel("distinct nodes")
    ax.set_ylabel("probability")
    return fig


def communication_volume() -> Figure:
    rows = volume_table(ModelConfig.from_preset("v3-671b"))
    per_token = [r for r in rows if r.unit.startswith("per token")]
    fig = Figure(figsize=(6.5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.barh([r.parallelism for r in per_token], [r.bytes / 1e6 for r in per_token], color="#f4a259")
    for i, r in enumerate(per_token):
        ax.text(r.bytes / 1e6, i, f" {r.bytes / 1e6:.2f} MB", va="center", fontsize=8)
    ax.set_xlabel("network bytes per token, forward + backward, whole model (MB)")
    ax.set_title("DeepSeek-V3 671B: what each parallelism moves per token", fontsize=10)
    ax.set_xlim(0, 1.25 * max(r.bytes for r in per_token) / 1e6)
    return fig


FIGURES = {
    "pipeline_schedules": pipeline_schedules,
    "bubble_vs_stages": bubble_vs_stages,
    "nodes_per_token": nodes_per_token_figure,
    "communication_volume": communication_volume,
}
