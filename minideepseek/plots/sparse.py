"""Figures of chapter 14 (DeepSeek-V3.2: sparse attention with the lightning indexer).

``dsa_cost`` plots the FLOPs of one query token's attention in one layer against the context length
at V3.2's dimensions (``sparse_attention.attention_flops``), dense and sparse, with the crossovers, and
the decode-step time measured on this machine at small dimensions (``time_decode_step``).
``indexer_selection`` draws, for one layer of a small random model, the causal mask, the keys the
indexer selects, and the dense attention they are meant to capture.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..config import ModelConfig
from ..indexer import Indexer
from ..model import Transformer
from ..sparse_attention import attention_flops, crossover, time_decode_step
from . import quick

CHAPTER = "14_sparse_attention"

# Small dimensions with V3.2's ratios between the indexer and MLA (for the CPU timing).
SMALL = dict(dim=256, n_heads=16, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=16, qk_rope_head_dim=8,
             v_head_dim=16, index_n_heads=8, index_head_dim=16, index_topk=256)


def dsa_cost() -> Figure:
    config = ModelConfig.from_preset("v3.2-671b")
    lengths = np.unique(np.logspace(np.log10(256), np.log10(131072), 60).astype(int))
    flops = attention_flops(config, torch.tensor(lengths))
    fig = Figure(figsize=(13, 4.6))
    left, right = fig.subplots(1, 2)
    styles = {"dense MHA": ("#4c72b0", "--"), "dense MQA": ("#4c72b0", "-"), "indexer": ("#55a868", ":"),
              "sparse (indexer + top-k MQA)": ("#c44e52", "-")}
    for name, values in flops.items():
        colour, line = styles[name]
        left.plot(lengths, values.numpy() / 1e6, line, color=colour, label=name, lw=2)
    for dense in ("dense MQA", "dense MHA"):
        x = crossover(config, dense)
        left.axvline(x, color="grey", lw=0.8)
        left.text(x * 1.05, 0.04 if dense == "dense MQA" else 0.16, f"crossover {x:,.0f}\n(vs {dense})", fontsize=8,
                  color="grey", transform=left.get_xaxis_transform())
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("context length L (keys before the query)")
    left.set_ylabel("MFLOPs per query token per layer")
    left.set_title("V3.2's dimensions: attention FLOPs of one query token, k = 2,048", fontsize=10)
    left.legend(fontsize=8)

    small = ModelConfig.from_preset("tiny-dsa", **SMALL, max_seq_len=16384)
    cpu_lengths = [512, 2048, 8192] if quick() else [256, 512, 1024, 2048, 4096, 8192, 16384]
    times = [time_decode_step(small, n, repeats=1 if quick() else 7) for n in cpu_lengths]
    measured = [t["sparse"] / t["dense"] for t in times]
    model = [float(attention_flops(small, n)["sparse (indexer + top-k MQA)"] / attention_flops(small, n)["dense MQA"])
             for n in cpu_lengths]
    right.plot(cpu_lengths, measured, "o-", color="#c44e52", label="measured: sparse / dense time")
    right.plot(cpu_lengths, [t["indexer"] / t["dense"] for t in times], "s:", color="#55a868",
               label="measured: indexer alone / dense")
    right.plot(cpu_lengths, model, "-", color="grey", lw=1, label="FLOP model: sparse / dense")
    right.axhline(1.0, color="black", lw=0.8)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("cached tokens L")
    right.set_ylabel("time ratio (below 1: sparse is faster)")
    right.set_title(f"one decode step on this CPU, small dims (k = {small.index_topk})", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def indexer_selection(seq: int = 48, topk: int = 12) -> Figure:
    config = ModelConfig.from_preset("tiny-dsa", vocab_size=256, n_layers=2, n_mtp_layers=0, index_topk=topk,
                                     init_std=0.2)
    torch.manual_seed(0)
    model = Transformer(config).eval()
    indexer = next(m for m in model.modules() if isinstance(m, Indexer))
    indexer.record, indexer.mode = {}, "dense"
    with torch.no_grad():
        model(torch.randint(0, 256, (1, seq), generator=torch.Generator().manual_seed(1)))
    r = indexer.record
    fig = Figure(figsize=(13, 4.4))
    axes = fig.subplots(1, 3)
    panels = [(r["causal"].float(), "causal mask: every earlier token"),
              (r["selected"][0].float(), f"indexer's top-{topk} (and causal)"),
              (r["attention"][0], "dense attention (mean over heads)")]
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(image.numpy(), cmap="Blues" if "attention" not in title else "magma", interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key position s")
        ax.set_ylabel("query position t")
    captured = float((r["attention"][0] * r["selected"][0]).sum(-1)[topk:].mean())
    fig.suptitle(f"One layer of a random model: queries past position {topk} attend to {topk} keys only; "
                 f"those keys hold {captured:.0%} of the dense attention here (an untrained indexer)", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"dsa_cost": dsa_cost, "indexer_selection": indexer_selection}
