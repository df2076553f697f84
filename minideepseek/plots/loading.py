"""Figures of chapter 06 (loading the real model).

``checkpoint_contents`` breaks the 685B hub checkpoint down by what its bytes hold, from the
layout alone (``checkpoint_names.hub_layout``). ``fp8_blocks`` draws the 128 x 128 scale grid of
one real weight, ``kv_a_proj_with_mqa`` (576 x 7168), whose last row of blocks is only 64 rows
high, and the error that FP8 storage leaves in a random weight of that shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..checkpoint import DTYPES, release_dtype
from ..checkpoint_names import BLOCK, COPY, SCALE, hub_layout
from ..config import ModelConfig
from ..fp8 import dequantize_blockwise, quantize_blockwise

CHAPTER = "06_loading"


def _component(name: str, role: str, n_layers: int) -> str:
    """Which part of the model a hub tensor belongs to, for the breakdown."""
    if role == SCALE:
        return "FP8 scales (weight_scale_inv)"
    if role == COPY or f"layers.{n_layers}." in name:
        return "MTP layer 61 (incl. its embedding/head copies)"
    if "embed_tokens" in name or name.startswith("lm_head"):
        return "embedding + head"
    if ".mlp.experts." in name:
        return "routed experts (256 x 58 layers)"
    if "shared_experts" in name:
        return "shared experts"
    if ".mlp.gate." in name:
        return "routers + correction biases"
    if ".mlp." in name:
        return "dense MLPs (layers 0-2)"
    if "self_attn" in name and "layernorm" not in name:
        return "attention (MLA)"
    return "norms"


def checkpoint_contents() -> Figure:
    """Bytes of the published 671B checkpoint (hub layout, FP8) by component, with tensor counts."""
    config = ModelConfig.from_preset("v3-671b")
    sizes: dict[str, list[float]] = {}
    for name, spec in hub_layout(config, fp8=True).items():
        entry = sizes.setdefault(_component(name, spec.role, config.n_layers), [0.0, 0])
        entry[0] += math.prod(spec.shape) * DTYPES[release_dtype(spec)].itemsize / 1e9
        entry[1] += 1
    ordered = sorted(sizes.items(), key=lambda item: item[1][0])
    fig = Figure(figsize=(10, 4.2))
    ax = fig.subplots()
    labels = [label for label, _ in ordered]
    gigabytes = [gb for _, (gb, _) in ordered]
    bars = ax.barh(labels, gigabytes, color="#4c72b0")
    for bar, (_, (gb, count)) in zip(bars, ordered):
        ax.text(bar.get_width() * 1.05 + 0.01, bar.get_y() + bar.get_height() / 2,
                f"{gb:,.3g} GB, {count:,} tensors", va="center", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(min(gigabytes) / 2, max(gigabytes) * 8)
    total = sum(gigabytes)
    count = sum(c for _, (_, c) in ordered)
    ax.set_xlabel("GB in the checkpoint (log scale): FP8 projections 1 byte, BF16 2 bytes, F32 4 bytes")
    ax.set_title(f"What the {count:,} tensors of the DeepSeek-V3 hub checkpoint hold ({total:,.0f} GB)", fontsize=11)
    fig.tight_layout()
    return fig


def fp8_blocks(columns: int = 1024, seed: int = 0) -> Figure:
    """Left: the block scales of a random 576 x 7168 weight (first ``columns`` columns), rows scaled
    differently so the scales differ; the last block row covers 64 rows. Right: relative error of
    the FP8 round trip W -> (Q, S) -> Q * S."""
    rows = 512 + 64  # kv_lora_rank + qk_rope_head_dim: the latent, then the shared RoPE key
    generator = torch.Generator().manual_seed(seed)
    row_scale = torch.logspace(-2.5, -1.5, rows).unsqueeze(1)  # magnitudes grow down the rows
    weight = torch.randn(rows, columns, generator=generator) * row_scale
    q, scale_inv = quantize_blockwise(weight)
    restored = dequantize_blockwise(q, scale_inv)

    fig = Figure(figsize=(12, 4.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    per_weight = scale_inv.repeat_interleave(BLOCK, 0)[:rows].repeat_interleave(BLOCK, 1)[:, :columns]
    image = left.imshow(per_weight.log10().numpy(), cmap="viridis", aspect="auto", interpolation="nearest",
                        extent=(0, columns, rows, 0))
    for i in range(scale_inv.shape[0]):
        for j in range(scale_inv.shape[1]):
            height = min(BLOCK, rows - i * BLOCK)
            left.add_patch(Rectangle((j * BLOCK, i * BLOCK), BLOCK, height, fill=False, edgecolor="white", lw=0.8))
    left.text(columns / 2, rows - 32, "5th block row: only 64 rows (576 = 4 x 128 + 64), its own scales",
              ha="center", va="center", fontsize=9, color="black")
    left.set_xlabel(f"input column (first {columns} of 7168)")
    left.set_ylabel("output row")
    left.set_title("kv_a_proj_with_mqa: one scale S per 128 x 128 block", fontsize=10)
    fig.colorbar(image, ax=left, label="log10 S (weight_scale_inv)")

    relative = ((restored - weight).abs() / weight.abs().clamp(min=1e-12)).flatten().numpy()
    right.hist(np.log10(relative[relative > 0]), bins=60, color="#dd8452")
    right.axvline(np.log10(2.0 ** -4), color="k", ls="--", lw=1)
    right.text(np.log10(2.0 ** -4), right.get_ylim()[1] * 0.95, "2^-4: half a step of E4M3's\n3 mantissa bits  ",
               fontsize=8, va="top", ha="right")
    right.set_xlabel("log10 |Q * S - W| / |W|")
    right.set_ylabel("weights")
    right.set_title("What FP8 storage costs each weight", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"checkpoint_contents": checkpoint_contents, "fp8_blocks": fp8_blocks}
