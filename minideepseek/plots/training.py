"""Figures of chapter 08 (training): the learning-rate schedule, and the loss and expert load of a run.

The loss and expert-load figures are the ones every run folder keeps (``run_plots.plot_loss`` and
``plot_expert_load``), drawn here from the default run recorded in ``chapters/08_training/default_run/``
(``minideepseek train`` on two CPU cores; rerun it and copy ``metrics.jsonl`` and ``samples.txt``
there to update them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..config import PRESETS
from ..optim import learning_rate
from ..run_plots import plot_expert_load, plot_loss
from ..runfolder import read_jsonl
from ..train import TrainConfig

CHAPTER = "08_training"
RECORDED_RUN = Path(__file__).resolve().parents[2] / "chapters" / CHAPTER / "default_run" / "metrics.jsonl"


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
    return read_jsonl(RECORDED_RUN)


FIGURES = {
    "lr_schedule": plot_lr_schedule,
    "default_run_loss": lambda: plot_loss(recorded_run()),
    "default_run_expert_load": lambda: plot_expert_load(recorded_run(), n_layers=PRESETS["tiny"].n_layers),
}
