"""Chapter 01 figures: what RMSNorm does to vectors, and what its eps is for."""

import numpy as np
import torch
from matplotlib.figure import Figure

from ..norm import RMSNorm

CHAPTER = "01_rmsnorm"


def geometry() -> Figure:
    """2-d vectors of very different lengths before RMSNorm, after it, and after its learned gain."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(200, 2, generator=generator)
    lengths = torch.exp(torch.randn(200, 1, generator=generator) * 0.7)  # lengths from ~0.2 to ~6
    x = directions / directions.norm(dim=-1, keepdim=True) * lengths

    norm = RMSNorm(2)
    with torch.no_grad():
        unit_rms = norm(x)
        norm.weight.copy_(torch.tensor([1.6, 0.5]))
        scaled = norm(x)

    fig = Figure(figsize=(11, 3.9))
    panels = fig.subplots(1, 3)
    titles = ["input x: any length", "x / RMS(x): on the circle of radius $\\sqrt{d}$",
              "times the gain g = (1.6, 0.5)"]
    colour = np.log(lengths.squeeze(-1).numpy())
    for ax, points, title in zip(panels, (x, unit_rms, scaled), titles):
        ax.scatter(points[:, 0], points[:, 1], c=colour, cmap="viridis", s=12)
        ax.axhline(0, color="#bbbbbb", lw=0.8)
        ax.axvline(0, color="#bbbbbb", lw=0.8)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
    reach = float(x.abs().max()) * 1.05
    for ax, limit in zip(panels, (reach, 2.8, 2.8)):
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
    angle = np.linspace(0, 2 * np.pi, 200)
    panels[1].plot(np.sqrt(2) * np.cos(angle), np.sqrt(2) * np.sin(angle), color="#d62728", lw=0.8, ls="--")
    fig.suptitle("RMSNorm keeps the direction, fixes the length, then rescales each axis "
                 "(colour: log of the input length)", fontsize=11)
    fig.tight_layout()
    return fig


def epsilon() -> Figure:
    """Output RMS against input RMS, rms_out = r / sqrt(r^2 + eps), for a few values of eps."""
    r = np.logspace(-6, 1, 400)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for eps, label in ((1e-6, "eps = 1e-6 (DeepSeek-V3)"), (1e-4, "eps = 1e-4"), (1e-2, "eps = 1e-2")):
        ax.plot(r, r / np.sqrt(r ** 2 + eps), label=label)
        ax.axvline(np.sqrt(eps), color="#bbbbbb", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("RMS of the input vector")
    ax.set_ylabel("RMS of the output (gain = 1)")
    ax.set_title("eps only matters for near-zero inputs: below $\\sqrt{eps}$ the output fades\n"
                 "instead of blowing tiny noise up to unit size", fontsize=10)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


FIGURES = {"geometry": geometry, "epsilon": epsilon}
