"""Figures of chapter 10 (FP8 training): the formats, the error of each scaling granularity,
the accumulator, and the training loss of FP8 against BF16.

Every function takes the data it draws as optional arguments and computes it when they are
missing (``fp8_experiments``; ``MINIDEEPSEEK_QUICK=1`` shortens the runs), so the notebook can reuse
results it already has.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..fp8 import GRANULARITIES
from ..fp8_experiments import accumulation_errors, granularity_errors, train_bytes, trained_tiny_activations
from . import quick

CHAPTER = "10_fp8"
COLORS = {"per-tensor": "tab:red", "per-row": "tab:orange", "1x128": "tab:green", "128x128": "tab:blue"}


def positive_values(dtype: torch.dtype) -> np.ndarray:
    """Every positive finite value of a float8 dtype, in increasing order (from its 256 bit patterns)."""
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float()
    values = values[torch.isfinite(values) & (values > 0)]
    return np.unique(values.numpy())


def fp8_formats() -> Figure:
    """Relative spacing of E4M3 and E5M2 (and BF16 for scale) over their whole range."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    for name, dtype, color in [("E4M3 (max 448)", torch.float8_e4m3fn, "tab:green"),
                               ("E5M2 (max 57344)", torch.float8_e5m2, "tab:purple")]:
        v = positive_values(dtype)
        ax.step(v[:-1], np.diff(v) / v[:-1], where="post", color=color, label=name)
        ax.axvline(v[-1], color=color, linestyle=":", linewidth=1)
    ax.axhline(2.0**-7, color="grey", linestyle="--", linewidth=1, label="BF16 (2^-7)")
    ax.set(xscale="log", yscale="log", xlabel="value", ylabel="gap to the next value / value",
           title="FP8 keeps 3 (E4M3) or 2 (E5M2) mantissa bits; below the normal range the steps grow")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def short_layer_name(name: str) -> str:
    """``layers.1.ffn.shared_experts.w1`` -> ``L1 shared w1``: short enough for a tick label."""
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "layers":
        return name
    rest = [p.replace("shared_experts", "shared") for p in parts[2:] if p not in ("attn", "ffn")]
    return f"L{parts[1]} " + " ".join(rest)


def granularity_error(errors: dict | None = None) -> Figure:
    """Relative E4M3 error of each linear input of trained ``tiny``, by granularity, per outlier level."""
    errors = errors if errors is not None else granularity_errors(trained_tiny_activations())
    n_layers = max(len(layers) for layers in errors.values())
    fig = Figure(figsize=(10, 2.2 + 0.26 * n_layers), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(errors), sharex=True, sharey=True))
    for ax, (factor, layers) in zip(axes, errors.items()):
        names = list(layers)
        rows = np.arange(len(names))
        for offset, granularity in enumerate(GRANULARITIES):
            ax.plot([100 * layers[n][granularity] for n in names], rows + 0.15 * (offset - 1.5),
                    "o", markersize=5, color=COLORS[granularity], label=granularity)
        blocks = [n.split(".")[1] if n.startswith("layers.") else "" for n in names]
        for row, block in enumerate(blocks):  # shade every other transformer block to group its linears
            if block.isdigit() and int(block) % 2 == 1:
                ax.axhspan(row - 0.5, row + 0.5, color="0.93", zorder=0, linewidth=0)
        ax.set_yticks(rows, [short_layer_name(n) for n in names])
        ax.set_ylim(len(names) - 0.5, -0.5)  # first layer at the top
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(labelsize=10)
        ax.set_title("no outliers" if factor == 1 else f"2 channels x{factor:g}", fontsize=11)
        ax.grid(axis="x", alpha=0.3)
    axes[len(axes) // 2].set_xlabel("relative RMS error of the ordinary channels (%, log scale)", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(GRANULARITIES), fontsize=10,
               title="scaling granularity", title_fontsize=10)
    fig.suptitle("Quantisation error of tiny's linear inputs by scaling granularity (E4M3)", fontsize=12)
    return fig


def accumulation(errors: dict[int, tuple[float, float]] | None = None) -> Figure:
    """Error of a 14-bit accumulator over K, without and with promotion every 128 elements."""
    if errors is None:
        errors = accumulation_errors((128, 512, 2048, 4096) if quick() else
                                     (128, 256, 512, 1024, 2048, 4096, 8192, 16384))
    ks = list(errors)
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot()
    ax.plot(ks, [100 * errors[k][0] for k in ks], "o-", color="tab:red", label="14-bit accumulator only")
    ax.plot(ks, [100 * errors[k][1] for k in ks], "o-", color="tab:green", label="promoted to FP32 every 128")
    ax.set(xscale="log", yscale="log", xlabel="K (length of the dot products)", ylabel="relative error (%)",
           title="Why V3 promotes partial sums to FP32 every 128 elements")
    ax.set_xticks(ks, [str(k) for k in ks], fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def moving_average(values: list[float], window: int) -> np.ndarray:
    values = np.asarray(values)
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_fp8_vs_bf16(losses: dict[str, list[float]] | None = None) -> Figure:
    """Training loss of ``tiny`` in FP32, BF16 and with FP8 linears (simulated); same data and seed.

    losses: {"fp32": [...], "bf16": [...], "fp8": [...]} per-step losses (computed when missing).
    """
    if losses is None:
        steps = 8 if quick() else 300
        losses = {p: train_bytes("tiny", p, steps=steps).losses for p in ("fp32", "bf16", "fp8")}
    window = max(1, len(losses["bf16"]) // 15)
    smooth = {p: moving_average(values, window) for p, values in losses.items()}
    steps = np.arange(len(smooth["bf16"])) + window
    style = {"fp32": ("tab:grey", ":", "FP32"), "bf16": ("tab:blue", "-", "BF16"),
             "fp8": ("tab:green", "--", "FP8 (1x128 / 128x128, simulated)")}
    fig = Figure(figsize=(11, 3.8))
    left, right = fig.subplots(1, 2)
    for p, values in smooth.items():
        color, linestyle, label = style[p]
        left.plot(steps, values, color=color, linestyle=linestyle, label=label)
        if p != "bf16":
            right.plot(steps, 100 * (values - smooth["bf16"]) / smooth["bf16"], color=color, linestyle=linestyle,
                       label=f"{label} vs BF16")
    left.set(xlabel="step", ylabel=f"loss (mean of {window} steps)", title="tiny, bytes of the stdlib")
    left.legend(fontsize=8)
    right.axhline(0, color="tab:blue", linewidth=1)
    for bound in (-1, 1):
        right.axhline(bound, color="tab:red", linestyle=":", linewidth=1)
    right.set(xlabel="step", ylabel="relative difference to BF16 (%)", title="relative loss gap")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


FIGURES = {
    "fp8_formats": fp8_formats,
    "granularity_error": granularity_error,
    "accumulation": accumulation,
    "loss_fp8_vs_bf16": loss_fp8_vs_bf16,
}
