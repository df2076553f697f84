"""Figures of chapter 11 (R1: reasoning from rewards): the clipped objective, and a GRPO run.

The run's figures are the ones every R1 run folder keeps (``run_plots.plot_training`` and
``plot_heldout``), drawn here from the run recorded in ``chapters/11_r1_grpo/default_run/`` (the
default ``minideepseek grpo``, seed 0, on two CPU cores; rerun it and copy ``metrics.jsonl`` and
``eval.json`` there to update them).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from ..grpo import GRPOConfig, clipped_surrogate
from ..r1 import R1Config, load_policy, pass_at_k, run_r1
from ..run_plots import plot_heldout, plot_training
from ..runfolder import read_jsonl
from . import quick

CHAPTER = "11_r1_grpo"
RECORDED_RUN = Path(__file__).resolve().parents[2] / "chapters" / CHAPTER / "default_run"


def plot_clipped_objective(epsilon: float = 0.2) -> Figure:
    """min(rho A, clip(rho) A) against the ratio rho, for A = +1 and A = -1 (PPO's trust region)."""
    ratio = torch.linspace(0.0, 2.0, 401)
    figure = Figure(figsize=(8, 3.4))
    for column, advantage in enumerate((1.0, -1.0)):
        ax = figure.add_subplot(1, 2, column + 1)
        logp = ratio.log().unsqueeze(0)  # one completion of 401 tokens, old log-prob 0
        objective, clipped = clipped_surrogate(logp, torch.zeros_like(logp), torch.tensor([advantage]),
                                               torch.ones_like(logp, dtype=torch.bool), epsilon, epsilon)
        objective, clipped = objective[0], clipped[0]
        ax.plot(ratio, ratio * advantage, color="grey", ls=":", label=r"$\rho A$ (no clip)")
        ax.plot(ratio, objective, lw=2, label=r"$\min(\rho A, \mathrm{clip}(\rho) A)$")
        ax.fill_between(ratio, objective.min().item(), objective.max().item(), where=clipped, color="tab:red",
                        alpha=0.12, label="clipped: zero gradient")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xlabel(r"ratio $\rho = \pi_\theta / \pi_{old}$")
        ax.set_title(f"advantage A = {advantage:+.0f}")
        ax.grid(alpha=0.3)
        if column == 0:
            ax.set_ylabel("per-token objective (maximised)")
            ax.legend(fontsize="small", loc="upper left")
    figure.suptitle(rf"GRPO's clipped surrogate, $\epsilon$ = {epsilon}", y=1.02)
    return figure


def plot_pass_at_k(curves: dict[str, dict[int, float]]) -> Figure:
    """pass@k against k (log scale) for each policy: {label: {k: pass@k}}."""
    figure = Figure(figsize=(7, 4))
    ax = figure.add_subplot()
    for label, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k: samples per problem (temperature 1)")
    ax.set_ylabel("pass@k: at least one right")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("RL turns pass@k into pass@1: held-out pass@k before and after GRPO")
    return figure


def default_run_pass_at_k() -> dict[str, dict[int, float]]:
    """pass@k of the default run's cold-start and GRPO policies (seed 0: the recorded run's models).

    Quick mode (``MINIDEEPSEEK_QUICK=1``): a short SFT and 3 GRPO steps, 8 samples of 100 problems.
    Otherwise the default run's SFT and GRPO (about 40 s on a CPU) and 32 samples of every one of the
    2,000 held-out problems (about a minute).
    """
    short = quick()
    overrides = dict(sft_steps=100, grpo=GRPOConfig(steps=3)) if short else {}
    with tempfile.TemporaryDirectory() as folder:
        config = R1Config(out_dir=folder, control=False, distill=False, eval_interval=10**6, progress=False,
                          **overrides)
        run_r1(config)
        heldout = config.task.split()[1][:100 if short else None]
        n = 8 if short else 32
        ks = tuple(2 ** i for i in range(n.bit_length()))
        return {label: pass_at_k(load_policy(Path(folder) / name, config.task), config.task, heldout, n, ks)
                for label, name in (("cold-start SFT", "sft_model"), ("after GRPO", "grpo_model"))}


def recorded_run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """metrics.jsonl records and eval.json of the chapter's recorded run."""
    return read_jsonl(RECORDED_RUN / "metrics.jsonl"), json.loads((RECORDED_RUN / "eval.json").read_text())


FIGURES = {
    "clipped_objective": plot_clipped_objective,
    "grpo_training": lambda: plot_training(recorded_run()[0]),
    "grpo_heldout": lambda: plot_heldout(*recorded_run()),
    "grpo_pass_at_k": lambda: plot_pass_at_k(default_run_pass_at_k()),
}
