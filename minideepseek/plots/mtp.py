"""Figures of chapter 07 (Multi-Token Prediction and the training loss).

``mtp_alignment`` draws, for a short sentence, which token each MTP depth takes in and
which it predicts at every position. ``mtp_training`` trains the tiny preset for a few
hundred steps on sequences whose next tokens are predictable (arithmetic progressions
modulo the vocabulary), with and without an MTP module, and plots the losses the
package's ``losses.compute_loss`` returns.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..config import ModelConfig
from ..losses import compute_loss
from ..model import Transformer
from ..optim import optimizer_step
from ..speed import configure_speed
from . import quick

CHAPTER = "07_mtp"

SENTENCE = "the cat sat on the mat and purred".split()


def mtp_alignment(depth: int = 2) -> Figure:
    """Rows: the main model and MTP depths 1..D; columns: positions i. Each cell names the token the
    row's module embeds at i (t_{i+k}) and the token it predicts (t_{i+k+1})."""
    words = SENTENCE
    seq = len(words) - 1  # the model reads words[:-1]; the last word is only ever a target
    fig = Figure(figsize=(13, 1.3 + 1.05 * (depth + 1)))
    ax = fig.subplots()
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for k in range(depth + 1):
        row = depth - k  # main model on top
        for i in range(seq):
            valid = i + k + 1 <= seq
            face = colours[k % len(colours)] if valid else "#eeeeee"
            ax.add_patch(_box(i, row, face, alpha=0.25 if valid else 1.0))
            if not valid:
                ax.text(i + 0.5, row + 0.5, "no target:\nposition dropped", ha="center", va="center",
                        fontsize=7, color="grey")
                continue
            seen = f"reads '{words[i]}'" if k == 0 else f"+ emb '{words[i + k]}'"
            ax.text(i + 0.5, row + 0.68, seen, ha="center", va="center", fontsize=8)
            ax.text(i + 0.5, row + 0.3, f"-> '{words[i + k + 1]}'", ha="center", va="center", fontsize=9,
                    fontweight="bold")
        label = "main model\n(next token)" if k == 0 else f"MTP depth {k}\n(token i+{k + 1})"
        ax.text(-0.15, row + 0.5, label, ha="right", va="center", fontsize=9)
    for i in range(seq):
        ax.text(i + 0.5, depth + 1.1, f"i = {i}", ha="center", fontsize=8)
    ax.set_xlim(-1.6, seq)
    ax.set_ylim(-0.1, depth + 1.35)
    ax.axis("off")
    ax.set_title("What each depth sees and predicts at position i: depth k adds the embedding of token i+k "
                 "to $h^{k-1}_i$ and predicts token i+k+1", fontsize=10)
    return fig


def _box(x: float, y: float, face: str, alpha: float):
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((x + 0.04, y + 0.06), 0.92, 0.88, boxstyle="round,pad=0.01", facecolor=face,
                          edgecolor="grey", alpha=alpha)


def arithmetic_batch(batch: int, seq: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, seq + 1) sequences start + step * t (mod vocab), start and step (1..7) random per row:
    after two tokens every later token, the next and the one after, is determined."""
    start = torch.randint(0, vocab, (batch, 1), generator=generator)
    step = torch.randint(1, 8, (batch, 1), generator=generator)
    return (start + step * torch.arange(seq + 1)) % vocab


def train_tiny(depth: int, steps: int, seed: int = 0, batch: int = 16, seq: int = 32) -> dict[str, np.ndarray]:
    """Train the tiny preset (2 layers, vocabulary 64) with MTP depth ``depth`` on arithmetic sequences.

    Returns the main loss and each depth's MTP loss per step. The same seed gives both runs the
    same main-model initialisation and the same batches.
    """
    config = ModelConfig.from_preset("tiny", vocab_size=64, n_layers=2, n_mtp_layers=depth)
    torch.manual_seed(seed)
    model = configure_speed(Transformer(config).train(), attention="sdpa", experts="grouped")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(seed)
    main, mtp = [], []
    for _ in range(steps):
        out = compute_loss(model, arithmetic_batch(batch, seq, config.vocab_size, generator))
        out.loss.backward()
        optimizer_step(model, optimizer, grad_clip=None, loss=out.loss.detach())  # AdamW, then move the router biases
        main.append(out.main.item())
        mtp.append([loss.item() for loss in out.mtp])
    return {"main": np.array(main), "mtp": np.array(mtp).reshape(steps, depth)}


def mtp_training(steps: int = 150) -> Figure:
    """Main and MTP losses of a D = 1 run next to the main loss of a D = 0 run (same data, same init)."""
    steps = 8 if quick() else steps
    with_mtp, without = train_tiny(1, steps), train_tiny(0, steps)
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    ax.plot(without["main"], color="grey", label="main loss, no MTP (D = 0)")
    ax.plot(with_mtp["main"], color="#4c72b0", label="main loss, D = 1")
    ax.plot(with_mtp["mtp"][:, 0], color="#dd8452", label="MTP depth-1 loss (token i+2)")
    floor = np.log(7) / 32  # only position 0 must guess (the step, 1 of 7); every later token is determined
    ax.axhline(floor, color="black", linestyle=":", linewidth=1, label=f"best possible main loss ({floor:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("training step (16 sequences of 32 tokens)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("Tiny preset on arithmetic sequences: the MTP module learns the token after next", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


FIGURES = {"mtp_alignment": mtp_alignment, "mtp_training": mtp_training}
