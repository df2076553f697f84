"""Figures of chapter 05 (the assembled model): where DeepSeek-V3's parameters sit, and how it is stacked.

Both figures are drawn from ``count_parameters`` (shapes only), so they describe the
671B model without building it.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from ..config import ModelConfig
from ..params import count_parameters

CHAPTER = "05_model"


def _billions(n: int) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e8 else f"{n / 1e6:,.2f}M" if n >= 1e5 else f"{n:,}"


PARTS = {  # what a column of the per-layer figure is made of, and its colour
    "MLA + block norms": "#4c72b0", "dense MLP": "#c44e52", "shared expert(s)": "#937860",
    "routed experts": "#8172b3", "gate (+ bias)": "#da8bc3", "embedding / head": "#ccb974",
    "MTP eh_proj + norms": "#f6a5a5",
}


def parameters_per_layer(config: ModelConfig | None = None) -> Figure:
    """Parameters of every layer of the stack (top) and what one token activates in each (bottom)."""
    c = config or ModelConfig.from_preset("v3-671b")
    counts = count_parameters(c)

    def per_layer(prefix: str, activated: bool) -> int:
        row = next((r for r in counts.rows if r.component.startswith(prefix)), None)
        return 0 if row is None else row.activated_per_layer if activated else row.per_layer

    def layer(layer_id: int, activated: bool) -> list[int]:
        """One column, in the order of PARTS."""
        attention = per_layer("attention", activated) + per_layer("block norms", activated)
        if not c.is_moe_layer(layer_id):
            return [attention, per_layer("dense MLP", activated), 0, 0, 0, 0, 0]
        return [attention, 0, per_layer("shared", activated), per_layer("routed", activated),
                per_layer("gate", activated), 0, 0]

    embedding = [0, 0, 0, 0, 0, c.vocab_size * c.dim, 0]
    positions = [-2] + list(range(c.n_layers)) + [c.n_layers + 1]
    labels = ["embed"] + [str(i) if i in (0, c.n_dense_layers, c.n_layers - 1) or i % 10 == 0 else ""
                          for i in range(c.n_layers)] + ["head"]
    fig = Figure(figsize=(14, 7.5))
    panels = fig.subplots(2, 1)
    for ax, activated in zip(panels, (False, True)):
        columns = [embedding] + [layer(i, activated) for i in range(c.n_layers)] + [embedding]
        column_positions, column_labels = list(positions), list(labels)
        if c.n_mtp_layers and not activated:
            moe_block = layer(c.n_layers, False)
            extra = counts.mtp // c.n_mtp_layers - sum(moe_block)
            columns.append(moe_block[:-1] + [extra])
            column_positions.append(c.n_layers + 3)
            column_labels.append("MTP")
        stacked = np.array(columns, dtype=float).T / 1e9  # (parts, columns)
        bottom = np.zeros(len(columns))
        for (part, colour), heights in zip(PARTS.items(), stacked):
            if heights.any():
                ax.bar(column_positions, heights, bottom=bottom, color=colour, width=0.8, label=part)
            bottom += heights
        ax.set_xticks(column_positions, column_labels, fontsize=8)
        ax.set_ylabel("billions of parameters")
        ax.legend(fontsize=8, loc="upper left", ncols=3)
        ax.set_ylim(0, bottom.max() * 1.35)
    dense_total, moe_total = sum(layer(0, False)), sum(layer(c.n_layers - 1, False))
    dense_active, moe_active = sum(layer(0, True)), sum(layer(c.n_layers - 1, True))
    panels[0].set_title(f"Stored: {_billions(counts.total)} (+ {_billions(counts.mtp)} MTP). A dense layer holds "
                        f"{_billions(dense_total)}, an MoE layer {_billions(moe_total)}", fontsize=10)
    panels[1].set_title(f"Activated per token: {_billions(counts.activated)}. An MoE layer activates "
                        f"{_billions(moe_active)}, about what a dense layer does ({_billions(dense_active)})",
                        fontsize=10)
    panels[1].set_xlabel(f"layer (0-{c.n_dense_layers - 1} dense, {c.n_dense_layers}-{c.n_layers - 1} MoE)")
    fig.tight_layout()
    return fig


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, fontsize: int = 8) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", facecolor=color,
                                edgecolor="black", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], style: str = "-|>", **kwargs) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": style, "color": "black", **kwargs})


def layer_stack(config: ModelConfig | None = None) -> Figure:
    """Left: the stack of layers with their parameter counts. Right: one pre-norm block."""
    c = config or ModelConfig.from_preset("v3-671b")
    counts = count_parameters(c)
    per_layer = {row.component: row for row in counts.rows}
    attention = per_layer["attention (MLA)"].per_layer
    norms = per_layer["block norms"].per_layer
    dense_layer = attention + norms + per_layer["dense MLP"].per_layer
    moe_rows = [row for row in counts.rows if row.component.startswith(("routed", "shared", "gate"))]
    moe_layer = attention + norms + sum(row.per_layer for row in moe_rows)
    moe_active = attention + norms + sum(row.activated_per_layer for row in moe_rows)
    n_moe = c.n_layers - c.n_dense_layers

    fig = Figure(figsize=(13, 7))
    stack, block = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    for ax in (stack, block):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 10)
        ax.axis("off")

    levels = [
        (0.6, "token ids (batch, seq)", "white"),
        (1.8, f"embed: {c.vocab_size:,} x {c.dim:,} = {_billions(c.vocab_size * c.dim)}", "#f2e6c9"),
        (3.3, f"layers 0-{c.n_dense_layers - 1}: MLA + dense MLP (inter {c.inter_dim:,})\n"
              f"{c.n_dense_layers} x {_billions(dense_layer)}", "#c9daf2"),
        (5.3, f"layers {c.n_dense_layers}-{c.n_layers - 1}: MLA + DeepSeekMoE\n"
              f"({c.n_shared_experts} shared + {c.n_routed_experts} routed, {c.n_activated_experts} active)\n"
              f"{n_moe} x {_billions(moe_layer)}  ({_billions(moe_active)} activated)", "#c9e8cf"),
        (7.1, f"norm (RMSNorm, {c.dim:,})", "#eeeeee"),
        (8.2, f"head: {c.dim:,} -> {c.vocab_size:,} = {_billions(c.vocab_size * c.dim)}", "#f2e6c9"),
        (9.4, "logits (batch, seq, vocab)", "white"),
    ]
    for (y, text, color), (y_next, _, _) in zip(levels, levels[1:] + [(None, None, None)]):
        height = 1.3 if "\n\n" in text or text.count("\n") == 2 else 0.8 if "\n" in text else 0.6
        _box(stack, 3.6, y, 6.4, height, text, color)
        if y_next is not None:
            _arrow(stack, (3.6, y + height / 2), (3.6, y_next - 0.35))
    _box(stack, 8.6, 6.2, 2.4, 1.6, f"MTP module x{c.n_mtp_layers}\n(training only)\n{_billions(counts.mtp)}\n"
                                    "shares embed\nand head", "#f6d5d5", fontsize=7)
    _arrow(stack, (6.8, 5.6), (7.4, 6.0), style="-|>", linestyle="--")
    stack.set_title(f"DeepSeek-V3: {_billions(counts.total)} parameters, "
                    f"{_billions(counts.activated)} activated per token", fontsize=10)

    x_main, x_skip = 4.5, 8.3
    steps = [(0.6, "x (batch, seq, dim)", "white"), (1.8, "attn_norm (RMSNorm)", "#eeeeee"),
             (3.0, "attn: MLA", "#c9daf2"), (4.2, "+", "white"), (5.4, "ffn_norm (RMSNorm)", "#eeeeee"),
             (6.6, f"ffn: MLP if layer_id < {c.n_dense_layers}\nelse MoE", "#c9e8cf"), (7.8, "+", "white"),
             (9.0, "out (batch, seq, dim)", "white")]
    for (y, text, color), (y_next, _, _) in zip(steps, steps[1:] + [(None, None, None)]):
        width = 0.6 if text == "+" else 4.6
        _box(block, x_main, y, width, 0.7 if "\n" in text else 0.5, text, color)
        if y_next is not None:
            _arrow(block, (x_main, y + 0.3), (x_main, y_next - 0.3))
    # each residual leaves the main line below its sub-layer and rejoins it at the "+"
    for start_x, start, end, skip_x, label in [(x_main + 2.3, 0.6, 4.2, x_skip, "h = x + attn(attn_norm(x))"),
                                                (x_main, 4.8, 7.8, x_skip - 0.8, "out = h + ffn(ffn_norm(h))")]:
        block.plot([start_x, skip_x, skip_x], [start, start, end], color="black", linewidth=1)
        _arrow(block, (skip_x, end), (x_main + 0.35, end))
        block.text(skip_x + 0.15, (start + end) / 2, "residual", rotation=90, va="center", fontsize=8)
        block.text(0.1, end - 0.55, label, fontsize=8, family="monospace")
    block.set_title("One block (official Block; hub DeepseekV3DecoderLayer): pre-norm residual", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"parameters_per_layer": parameters_per_layer, "layer_stack": layer_stack}
