"""Figures of chapter 11 (R1: reasoning from rewards): the clipped objective, and a GRPO run.

The run's figures are the ones every R1 run folder keeps (``run_plots.plot_training`` and
``plot_heldout``), drawn here from the run recorded in ``chapters/11_r1_grpo/default_run/`` (the
default ``minideepseek grpo``, seed 0, one thread; rerun it and copy ``metrics.jsonl`` and
``eval.json`` there to update them). Two more recorded runs feed the last two figures, each made
by the command in its folder's ``command.txt``:

    weak_cold_start_run/   ``minideepseek grpo --sft-steps 40 --steps 100 --no-control --no-distill``:
                           a cold start too short to teach the answers, R1-Zero-like dynamics
    student_rl_run/        ``minideepseek grpo --preset student --no-control --no-distill``: GRPO run
                           directly on the distillation student, to compare with distilling
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


def recorded(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """metrics.jsonl records and eval.json of the recorded run ``chapters/11_r1_grpo/<name>/``."""
    folder = RECORDED_RUN.parent / name
    return read_jsonl(folder / "metrics.jsonl"), json.loads((folder / "eval.json").read_text())


def _moving_average(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def plot_dynamics(runs: dict[str, list[dict[str, Any]]], window: int = 5) -> Figure:
    """R1-Zero-style dynamics of GRPO runs: per step, the sampled completions' accuracy and format
    rate (top) and their mean length in tokens (bottom); one column per run, moving average of
    ``window`` steps over the raw values."""
    figure = Figure(figsize=(10, 6.4), layout="constrained")
    axes = figure.subplots(2, len(runs), sharex="col", squeeze=False)
    for column, (label, records) in enumerate(runs.items()):
        steps = [r for r in records if "reward" in r]
        x = [r["step"] for r in steps]
        top, bottom = axes[0][column], axes[1][column]
        for key, name, color in (("format_rate", "format reward (template kept)", "tab:orange"),
                                 ("accuracy", "accuracy reward (answer right)", "tab:blue")):
            raw = [r[key] for r in steps]
            top.plot(x, raw, color=color, alpha=0.25, lw=1)
            top.plot(x, _moving_average(raw, window), color=color, lw=2, label=name)
        top.set(ylim=(-0.02, 1.02), title=label, ylabel="fraction of samples" if column == 0 else None)
        top.grid(alpha=0.3)
        top.legend(loc="lower right", fontsize="small")
        raw = [r["completion_length"] for r in steps]
        bottom.plot(x, raw, color="tab:green", alpha=0.25, lw=1)
        bottom.plot(x, _moving_average(raw, window), color="tab:green", lw=2, label="mean completion length")
        bottom.set(xlabel="GRPO step", ylabel="tokens per completion" if column == 0 else None)
        bottom.grid(alpha=0.3)
        bottom.legend(loc="best", fontsize="small")
    figure.suptitle(f"What the sampled completions do during GRPO (light: per step; dark: mean of {window} steps)")
    return figure


def plot_distill_vs_rl(default: dict[str, Any], student_rl: dict[str, Any]) -> Figure:
    """Held-out greedy accuracy: the policy before and after GRPO, the student distilled from it, and
    the same student trained by its own cold start and GRPO (R1's Table 6 in miniature)."""
    bars = [("policy (195k)\ncold-start SFT", default["sft"], "tab:gray"),
            ("policy (195k)\nafter GRPO", default["grpo"], "tab:blue"),
            ("student (84k)\ndistilled from it", default["student"], "tab:purple"),
            ("student (84k)\ncold-start SFT", student_rl["sft"], "tab:gray"),
            ("student (84k)\nafter its own GRPO", student_rl["grpo"], "tab:green")]
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    ax = figure.add_subplot()
    for i, (label, result, color) in enumerate(bars):
        ax.bar(i, 100 * result["accuracy"], color=color, alpha=0.85)
        ax.text(i, 100 * result["accuracy"] + 1.5, f"{100 * result['accuracy']:.1f} %", ha="center")
        ax.plot(i, 100 * result["carry_accuracy"], "k_", markersize=22, mew=2)
    ax.plot([], [], "k_", markersize=12, mew=2, label="on problems with a carry")
    ax.set_xticks(range(len(bars)), [label for label, _, _ in bars])
    ax.set(ylim=(0, 109), ylabel="held-out greedy accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title("Distillation against RL on the small model itself (2,000 held-out problems)")
    return figure


FIGURES = {
    "clipped_objective": plot_clipped_objective,
    "grpo_training": lambda: plot_training(recorded_run()[0]),
    "grpo_heldout": lambda: plot_heldout(*recorded_run()),
    "grpo_pass_at_k": lambda: plot_pass_at_k(default_run_pass_at_k()),
    "grpo_dynamics": lambda: plot_dynamics({"default run (cold start: 400 SFT steps)": recorded_run()[0],
                                            "weak cold start (40 SFT steps)": recorded("weak_cold_start_run")[0]}),
    "distill_vs_rl": lambda: plot_distill_vs_rl(recorded_run()[1], recorded("student_rl_run")[1]),
}
