"""Figures of chapter 09 (Inference with MLA).

``cache_memory`` draws the KV cache of one sequence against its length for every way of
caching attention at DeepSeek-V3's width (61 layers, BF16), and how many such sequences
fit beside the FP8 weights on one 8 x H200 node. ``decode_cost`` counts, per cached token
and per decode step of one layer, the bytes each MLA decode path reads and the
multiply-adds it does: the absorbed path reads 71x less than the per-head cache, and
re-expanding the latent every step costs ~120x more arithmetic than absorbing it.
Everything is computed from the config; nothing is timed.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..config import ModelConfig
from ..kv_cache import kv_values_per_token
from ..params import count_parameters

CHAPTER = "09_inference"

BYTES_PER_VALUE = 2  # BF16 cache
NODE_MEMORY = 8 * 141e9  # one node of 8 H200
COLORS = {"MLA latent (absorbed)": "#4c72b0", "MLA per-head (naive)": "#c44e52", "MHA": "#dd8452",
          "GQA (8 KV heads)": "#55a868", "MQA": "#8172b3"}


def cache_memory(config: ModelConfig | None = None) -> Figure:
    """Left: the KV cache of one sequence vs its length. Right: sequences that fit beside the weights."""
    config = config or ModelConfig.from_preset("v3-671b")
    per_token = {kind: n * config.n_layers * BYTES_PER_VALUE for kind, n in kv_values_per_token(config).items()}
    weights = count_parameters(config).bytes_fp8
    contexts = 2.0 ** np.arange(10, 18)  # 1K .. 128K tokens
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for kind, size in per_token.items():
        left.plot(contexts, contexts * size / 1e9, marker="o", color=COLORS[kind],
                  label=f"{kind}: {size / 1024:,.1f} KiB/token")
        right.plot(contexts, np.maximum((NODE_MEMORY - weights) / (contexts * size), 0), marker="o",
                   color=COLORS[kind], label=kind)
    left.axhline(141, color="grey", linestyle="--", linewidth=1)
    left.text(contexts[0], 141 * 1.3, "one H200: 141 GB", color="dimgrey", fontsize=10)
    right.axhline(1, color="grey", linestyle="--", linewidth=1)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(contexts, [f"{int(c) // 1024}K" for c in contexts])
        ax.minorticks_off()
        ax.set_xlabel("context length (tokens)", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(True, which="major", alpha=0.3)
    left.set_ylabel("KV cache of one sequence (GB, log scale)", fontsize=11)
    left.set_title(f"KV cache of one sequence:\n{config.n_layers} layers x values per token x "
                   f"{BYTES_PER_VALUE} bytes", fontsize=11)
    right.set_ylabel("sequences that fit (log scale)", fontsize=11)
    right.set_title(f"Sequences that fit in 8 x H200 ({NODE_MEMORY / 1e9:,.0f} GB)\nbeside the "
                    f"{weights / 1e9:,.0f} GB of FP8 weights", fontsize=11)
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=10,
               title="cache (size per token, all layers)", title_fontsize=10)
    fig.suptitle(f"KV cache at DeepSeek-V3's width ({config.n_heads} query heads; MHA/GQA/MQA with "
                 f"{config.v_head_dim}-wide heads;\nMLA latent {config.kv_lora_rank} + rope key "
                 f"{config.qk_rope_head_dim})", fontsize=12)
    return fig


def decode_costs(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """(bytes read, multiply-adds) per cached token, one layer, one new query token, by decode path.

    per-head: read k and v of every head; q.k and p.v per head.
    absorbed: read the 576-value latent + rope key once for all heads; each head scores it with its
        512 + 64 wide query and sums the 512-wide latent with its weights.
    re-expanded: read the latent, then multiply it by wkv_b for every head (the trap), then per-head attention.
    """
    h, rank, rope = config.n_heads, config.kv_lora_rank, config.qk_rope_head_dim
    per_head_values = h * (config.qk_head_dim + config.v_head_dim)
    expand = h * (config.qk_nope_head_dim + config.v_head_dim) * rank
    return {
        "per-head cache": (per_head_values * BYTES_PER_VALUE, per_head_values),
        "latent, absorbed": ((rank + rope) * BYTES_PER_VALUE, h * (rank + rope) + h * rank),
        "latent, re-expanded": ((rank + rope) * BYTES_PER_VALUE, expand + per_head_values),
    }


def decode_cost(config: ModelConfig | None = None) -> Figure:
    """Bars: bytes read and multiply-adds per cached token per decode step, for the three MLA paths."""
    config = config or ModelConfig.from_preset("v3-671b")
    costs = decode_costs(config)
    names = list(costs)
    colors = ["#c44e52", "#4c72b0", "#8c8c8c"]
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    fig.get_layout_engine().set(wspace=0.06)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, index, label in [(axes[0], 0, "bytes read from the BF16 cache"),
                             (axes[1], 1, "multiply-adds")]:
        values = [costs[name][index] for name in names]
        ax.barh(names[::-1], values[::-1], color=colors[::-1])
        for row, value in enumerate(values[::-1]):
            ax.text(value * 1.2, row, f"{value:,}", va="center", fontsize=11)
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 3, max(values) * 30)
        ax.set_xlabel(f"{label} (log scale)", fontsize=11)
        ax.tick_params(labelsize=11)
        ax.tick_params(axis="y", length=0)
    read_ratio = costs["per-head cache"][0] / costs["latent, absorbed"][0]
    math_ratio = costs["latent, re-expanded"][1] / costs["latent, absorbed"][1]
    fig.suptitle(f"Decoding one token against a long context, V3 dims, per cached token, one layer, one decode "
                 f"step:\nabsorbing reads {read_ratio:.0f}x less than the per-head cache; re-expanding does "
                 f"{math_ratio:.0f}x the arithmetic of absorbing", fontsize=12)
    return fig


FIGURES = {"cache_memory": cache_memory, "decode_cost": decode_cost}
