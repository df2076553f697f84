"""Figures of chapter 13 (ablations), drawn from the studies recorded in ``chapters/13_ablations/results/``.

One figure per study (``run_plots.plot_study``: validation bits per byte against training FLOPs and
against seconds, mean and ± one standard deviation over the seeds), the balancing study's expert load
per source domain (``run_plots.plot_domain_loads``), and ``tradeoffs``: every variant of every study
as quality (bits per byte, relative to V3's choice in the same study) against speed (tokens per second,
relative likewise). Nothing is trained here: ``minideepseek ablate STUDY --out
chapters/13_ablations/results/STUDY`` recorded the runs.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from ..run_plots import plot_domain_loads, plot_study
from ..runfolder import read_json
from . import REPO_ROOT

CHAPTER = "13_ablations"
STUDY_NAMES = ("attention", "moe", "balancing", "gate", "mtp")


def results_dir() -> Path:
    return REPO_ROOT / "chapters" / CHAPTER / "results"


def recorded(study: str) -> dict:
    """The recorded ``results.json`` of ``study``."""
    return read_json(results_dir() / study / "results.json")


def study_figure(study: str) -> Figure:
    return plot_study(recorded(study))


def domain_loads() -> Figure:
    return plot_domain_loads(recorded("balancing"))


def tradeoffs() -> Figure:
    """Each variant's paired bits-per-byte difference from V3's choice (up is worse) against its speed
    relative to V3's choice (right is faster), mean ± std over seeds."""
    figure = Figure(figsize=(8, 5))
    ax = figure.add_subplot()
    for index, study in enumerate(STUDY_NAMES):
        results = recorded(study)
        reference, *others = results["settings"]["variants"]
        for number, variant in enumerate(others):
            bpb = results["comparisons"][f"{variant}_minus_{reference}_val_bpb"]
            speed = results["comparisons"][f"{variant}_over_{reference}_tokens_per_s"]
            ax.errorbar(speed["mean"], bpb["mean"], xerr=speed["std"], yerr=bpb["std"], fmt="o",
                        color=f"C{index}", capsize=2, label=study if number == 0 else None)
            ax.annotate(variant, (speed["mean"], bpb["mean"]), fontsize="x-small", xytext=(4, 3),
                        textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8)
    ax.set_xlabel("tokens per second relative to V3's choice (same seed)")
    ax.set_ylabel("validation bits per byte minus V3's choice (same seed)")
    ax.set_title("every alternative against V3's choice, at equal training FLOPs\n"
                 "below the line: better than V3's choice; right of it: faster", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


FIGURES = {**{f"study_{name}": partial(study_figure, name) for name in STUDY_NAMES},
           "expert_load_by_domain": domain_loads, "tradeoffs": tradeoffs}
