"""The figures a run folder keeps next to its metrics: drawn from its logs, redrawn at every checkpoint.

``minideepseek train`` writes ``loss.png`` and ``expert_load.png`` (``write_training_plots``) and
``minideepseek grpo`` writes ``training.png`` and ``heldout.png`` (``write_r1_plots``) from the
``metrics.jsonl`` records of the run. The chapters draw the same figures from their recorded runs
(``plots/training.py``, ``plots/grpo.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .config import ModelConfig
from .runfolder import read_jsonl, save_figures


# ----------------------------------------------------------------------------- pre-training
def plot_loss(records: list[dict[str, Any]]) -> Figure:
    """Training loss (each logged step) and validation loss (each evaluation) against the step; the
    validation bits per byte (``val_bpb``) on a second axis when the run logged them."""
    figure = Figure(figsize=(7, 4))
    ax = figure.add_subplot()
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), lw=1, alpha=0.6, label="train (next-token loss of the step's batch)")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation (fixed held-out documents)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    if val:
        ax.set_title(f"validation loss {val[0][1]:.2f} -> {val[-1][1]:.2f}")
    bpb = [(r["step"], r["val_bpb"]) for r in records if "val_bpb" in r]
    if bpb:  # bits per UTF-8 byte of the validation text: comparable across tokenizers
        right = ax.twinx()
        right.plot(*zip(*bpb), "s--", ms=3, color="tab:green", alpha=0.7, label="validation bits per byte")
        right.set_ylabel("validation bits per byte")
        ax.set_title(f"validation loss {val[0][1]:.2f} -> {val[-1][1]:.2f} nats/token, "
                     f"{bpb[0][1]:.2f} -> {bpb[-1][1]:.2f} bits/byte")
        right.legend(loc="upper center")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def plot_expert_load(records: list[dict[str, Any]], n_layers: int | None = None) -> Figure:
    """Per MoE layer: tokens of the busiest expert over the mean tokens per expert, at each logged step.

    1.0 is perfect balance; the auxiliary-loss-free bias update pulls every layer towards it.
    ``n_layers`` (the model's): layers from there on are the MTP modules' and are labelled so.
    """
    figure = Figure(figsize=(7, 4))
    ax = figure.add_subplot()
    layers = sorted({key.split("/")[0] for r in records for key in r if key.endswith("/max_over_mean")
                     and key.startswith("layer_")}, key=lambda name: int(name.split("_")[1]))
    for layer in layers:
        points = [(r["step"], r[f"{layer}/max_over_mean"]) for r in records if f"{layer}/max_over_mean" in r]
        number = int(layer.split("_")[1])
        mtp = n_layers is not None and number >= n_layers
        ax.plot(*zip(*points), lw=1, label=f"layer {number}" + (" (MTP)" if mtp else ""))
    ax.axhline(1.0, color="black", ls="--", lw=1, label="perfect balance")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("max load / mean load")
    ax.set_title("expert load per MoE layer (counted over each step's batch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return figure


# ----------------------------------------------------------------------------- R1 / GRPO

def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return ([p[0] for p in points], [p[1] for p in points]) if points else ([], [])


def plot_training(records: list[dict[str, Any]]) -> Figure:
    """Four panels against the GRPO step: reward and train accuracy, KL, completion length, clip/zero-std."""
    figure = Figure(figsize=(10, 6.4))
    axes = figure.subplots(2, 2, sharex=True)
    panels = [
        (axes[0, 0], [("reward", "mean reward"), ("accuracy", "accuracy (sampled)"),
                      ("format_rate", "format rate")], "reward"),
        (axes[0, 1], [("kl", r"KL to $\pi_{ref}$ (k3, per token)")], "KL"),
        (axes[1, 0], [("completion_length", "mean completion length")], "tokens"),
        (axes[1, 1], [("clip_fraction", "clipped tokens"), ("frac_zero_std", "groups with zero advantage")],
         "fraction"),
    ]
    for ax, series, ylabel in panels:
        for key, label in series:
            steps, values = _series(records, key)
            if steps:
                ax.plot(steps, values, lw=1.2, label=label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel("GRPO step")
    figure.suptitle("GRPO training signals (each step: the samples of that step)")
    return figure


def plot_heldout(records: list[dict[str, Any]], results: dict[str, Any]) -> Figure:
    """Held-out greedy accuracy (all problems and carry problems) against the GRPO step, with the control."""
    figure = Figure(figsize=(7, 4))
    ax = figure.add_subplot()
    for key, label in (("heldout_accuracy", "all held-out problems"),
                       ("heldout_carry_accuracy", "problems with a carry")):
        steps, values = _series(records, key)
        if steps:
            ax.plot(steps, values, "o-", ms=3, label=label)
    if "control" in results:
        ax.axhline(results["control"]["accuracy"], color="black", ls="--", lw=1,
                   label=f"SFT-only control, same wall time ({results['control']['accuracy']:.1%})")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("GRPO step (0: the cold-start SFT model)")
    ax.set_ylabel("greedy accuracy")
    ax.set_title(f"held-out accuracy on {results['n_problems']} unseen problems: "
                 f"{results['sft']['accuracy']:.1%} -> {results['grpo']['accuracy']:.1%}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return figure


def write_training_plots(run_dir: Path) -> None:
    """loss.png and expert_load.png of a training run, from its metrics.jsonl."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    n_layers = ModelConfig.from_json(run_dir / "config.json").n_layers
    save_figures(run_dir, {"loss.png": plot_loss(records), "expert_load.png": plot_expert_load(records, n_layers)})


def write_r1_plots(run_dir: Path) -> None:
    """training.png and heldout.png of an R1 run, from its metrics.jsonl and eval.json."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    results = json.loads((run_dir / "eval.json").read_text())
    save_figures(run_dir, {"training.png": plot_training(records), "heldout.png": plot_heldout(records, results)})


# ----------------------------------------------------------------------------- ablation studies
def plot_study(results: dict[str, Any]) -> Figure:
    """Validation bits per byte against training FLOPs (left) and training seconds (right), one line per
    variant: the mean over seeds, with a band of ± one standard deviation where there are several."""
    import numpy as np

    figure = Figure(figsize=(11, 4))
    by_flops, by_seconds = figure.subplots(1, 2, sharey=True)
    variants = list(results["settings"]["variants"])
    for index, slug in enumerate(variants):
        curves = [r["curve"] for r in results["runs"] if r["variant"] == slug]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        bpb = np.array([[p["val_bpb"] for p in c[:length]] for c in curves])
        mean, std = bpb.mean(axis=0), bpb.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
        style = dict(color=f"C{index}", lw=2.2 if index == 0 else 1.4)
        for ax, key in ((by_flops, "flops"), (by_seconds, "seconds")):
            x = np.array([[p[key] for p in c[:length]] for c in curves]).mean(axis=0)
            ax.plot(x, mean, "o-", ms=3, label=slug + (" (V3)" if index == 0 else ""), **style)
            ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15)
    by_flops.set_xlabel("training FLOPs")
    by_seconds.set_xlabel("training seconds (this device)")
    by_flops.set_ylabel("validation bits per byte")
    for ax in (by_flops, by_seconds):
        ax.grid(alpha=0.3)
    by_flops.legend(fontsize="small")
    seeds = max((r["seed"] for r in results["runs"]), default=0) + 1
    equal = "tokens" if results["settings"]["request"].get("iso") == "tokens" else "FLOPs"
    figure.suptitle(f"{results['study']}: {results['question']} ({seeds} seed(s), equal {equal})", fontsize="medium")
    figure.tight_layout()
    return figure


def plot_domain_loads(results: dict[str, Any], seed: int = 0) -> Figure:
    """For each variant, the share of one MoE layer's expert picks per source domain relative to a uniform
    share (1.0 = the expert's fair share), the analogue of the V3 report's Figures 9-10."""
    import numpy as np

    runs = [r for r in results["runs"] if r.get("domain_loads") and r["seed"] == seed]
    figure = Figure(figsize=(4 * max(len(runs), 1), 3.2))
    axes = np.atleast_1d(figure.subplots(1, max(len(runs), 1)))
    for index, (ax, run) in enumerate(zip(axes, runs)):
        domains = list(run["domain_loads"])
        layer = sorted(run["domain_loads"][domains[0]], key=lambda name: int(name.split("_")[1]))[-1]
        shares = np.array([run["domain_loads"][d][layer] for d in domains])
        image = ax.imshow(shares * shares.shape[1], cmap="viridis", vmin=0, vmax=3, aspect="auto")
        ax.set_yticks(range(len(domains)), domains if index == 0 else [], fontsize="small")
        ax.set_xlabel(f"expert ({layer})")
        ax.set_title(f"{run['variant']}: MaxVio {run['max_vio']:.2f}", fontsize="medium")
    if runs:
        figure.colorbar(image, ax=list(axes), label="load / uniform share")
    return figure


def write_study_plots(out_dir: Path, results: dict[str, Any]) -> None:
    """bpb.png of an ablation study, and expert_load_by_domain.png when it measured domains."""
    figures = {"bpb.png": plot_study(results)}
    if any(r.get("domain_loads") for r in results["runs"]):
        figures["expert_load_by_domain.png"] = plot_domain_loads(results)
    save_figures(out_dir, figures)
