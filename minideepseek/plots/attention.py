"""Figures of chapter 03 (Multi-head Latent Attention): how much each kind of attention caches.

Every attention kind below keeps, per token and per layer, the keys and values that
later tokens will attend to:

* MHA caches a key (``qk_head_dim`` = 192) and a value (``v_head_dim`` = 128) for every head;
* GQA shares each cached key/value head among a group of query heads (8 KV heads here);
* MQA keeps a single key/value head for all query heads;
* MLA caches the normalised latent (``kv_lora_rank`` = 512) and the shared rotated key
  (``qk_rope_head_dim`` = 64), from which every head's key and value are re-expanded.

All four are counted at DeepSeek-V3's head dimensions, so the only thing that changes is
what is cached.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..config import ModelConfig
from ..params import count_parameters

CHAPTER = "03_mla"

BYTES_PER_VALUE = 2  # BF16
GQA_KV_HEADS = 8
COLORS = {"MHA": "#c44e52", "GQA": "#dd8452", "MQA": "#8172b3", "MLA": "#4c72b0"}


def cache_values_per_token(config: ModelConfig, gqa_kv_heads: int = GQA_KV_HEADS) -> dict[str, int]:
    """Values cached per token per layer, by attention kind, at ``config``'s head dimensions.

    V3: MHA 40,960; GQA (8 KV heads) 2,560; MQA 320; MLA 576.
    """
    one_kv_head = config.qk_head_dim + config.v_head_dim
    counts = count_parameters(config)
    return {
        "MHA": counts.kv_cache_per_head,
        f"GQA ({gqa_kv_heads} KV heads)": gqa_kv_heads * one_kv_head,
        "MQA": one_kv_head,
        "MLA": counts.kv_cache_latent,
    }


def _color(kind: str) -> str:
    return COLORS[kind.split()[0]]


def kv_cache_bytes(config: ModelConfig | None = None) -> Figure:
    """Left: cache bytes per token (all layers, BF16). Right: the cache of one sequence vs its length."""
    config = config or ModelConfig.from_preset("v3-671b")
    values = cache_values_per_token(config)
    per_token = {kind: n * config.n_layers * BYTES_PER_VALUE for kind, n in values.items()}

    fig = Figure(figsize=(12, 4.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    kinds = list(per_token)[::-1]
    left.barh(kinds, [per_token[k] / 1024 for k in kinds], color=[_color(k) for k in kinds])
    for row, kind in enumerate(kinds):
        left.text(per_token[kind] / 1024 * 1.1, row,
                  f"{values[kind]:,} values/layer\n{per_token[kind] / 1024:,.1f} KiB/token", va="center", fontsize=8)
    left.set_xscale("log")
    left.set_xlim(10, 2e5)
    left.set_xlabel("KV cache per token, all layers (KiB, log scale)")
    left.set_title(f"Per token: {config.n_layers} layers x values x {BYTES_PER_VALUE} bytes")

    contexts = 2.0 ** np.arange(10, 18)  # 1K .. 128K tokens
    for kind, size in per_token.items():
        right.plot(contexts, contexts * size / 1e9, marker="o", color=_color(kind), label=kind)
    right.axhline(141, color="grey", linestyle="--", linewidth=1)
    right.text(contexts[0], 141 * 1.25, "one H200 holds 141 GB", color="grey", fontsize=8)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xticks(contexts, [f"{int(c) // 1024}K" for c in contexts])
    right.set_xlabel("context length (tokens)")
    right.set_ylabel("KV cache of one sequence (GB, log scale)")
    mha, mla = values["MHA"], values["MLA"]
    right.set_title(f"One sequence: MLA caches {mha / mla:.1f}x less than MHA")
    right.legend(loc="lower right", fontsize=8)
    right.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"KV cache at DeepSeek-V3's dimensions ({config.n_heads} heads, head dims "
                 f"{config.qk_head_dim}/{config.v_head_dim}, latent {config.kv_lora_rank} + rope key "
                 f"{config.qk_rope_head_dim}, BF16)", fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"kv_cache_bytes": kv_cache_bytes}
