"""Figures of chapter 08 (training): the learning-rate schedule, and the loss and expert load of a run.

``plot_loss`` and ``plot_expert_load`` draw any run's ``metrics.jsonl`` records (the trainer
writes them as ``loss.png`` and ``expert_load.png`` into the run folder). The chapter's copies
come from the default run recorded in ``chapters/08_training/default_run/`` (``minideepseek
train`` on two CPU cores; rerun it and copy ``metrics.jsonl`` and ``samples.txt`` there to update them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..config import PRESETS
from ..train import TrainConfig, learning_rate

CHAPTER = "08_training"
RECORDED_RUN = Path(__file__).resolve().parents[2] / "chapters" / CHAPTER / "default_run" / "metrics.jsonl"


def plot_loss(records: list[dict[str, Any]]) -> Figure:
    """Training loss (each logged step) and validation loss (each evaluation) against the step."""
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


def plot_lr_schedule(config: TrainConfig | None = None) -> Figure:
    """The learning rate of every step: linear warm-up, then a cosine down to ``min_lr``."""
    config = config or TrainConfig()
    steps = np.arange(config.steps)
    lrs = [learning_rate(int(s), config.lr, config.min_lr, config.warmup_steps, config.steps) for s in steps]
    figure = Figure(figsize=(7, 3))
    ax = figure.add_subplot()
    ax.plot(steps, lrs)
    ax.axvline(config.warmup_steps, color="gray", ls=":", lw=1)
    ax.annotate("end of warm-up", (config.warmup_steps, config.lr), xytext=(8, -12), textcoords="offset points")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"warm-up {config.warmup_steps} steps, cosine {config.lr:g} -> {config.min_lr:g} "
                 f"(tiny's defaults, {config.steps} steps)")
    ax.grid(alpha=0.3)
    return figure


def recorded_run() -> list[dict[str, Any]]:
    """The metrics of the chapter's recorded default run."""
    if not RECORDED_RUN.is_file():
        raise FileNotFoundError(f"{RECORDED_RUN} is missing: run `minideepseek train` and copy the run's "
                                "metrics.jsonl there")
    return [json.loads(line) for line in RECORDED_RUN.read_text().splitlines() if line.strip()]


FIGURES = {
    "lr_schedule": plot_lr_schedule,
    "default_run_loss": lambda: plot_loss(recorded_run()),
    "default_run_expert_load": lambda: plot_expert_load(recorded_run(), n_layers=PRESETS["tiny"].n_layers),
}
