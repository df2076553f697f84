"""Chapter 00 figures: where each part sits in DeepSeek-V3, and where its 671B parameters are."""

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch

from ..config import ModelConfig
from ..params import count_parameters

CHAPTER = "00_big_picture"

# Colours by kind of component, shared by both figures.
COLOURS = {"norm": "#f2d7a7", "attention": "#9ecae1", "ffn": "#a1d99b", "embed": "#dadaeb", "mtp": "#fcbba1"}


def _box(ax, x, y, w, h, text, kind, fontsize=9):
    """A rounded box centred at (x, y)."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor=COLOURS[kind], edgecolor="#444444", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end):
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1.2})


def _residual_add(ax, x, y, skip_from_y, skip_x):
    """A (+) at (x, y) fed by a skip connection that leaves the main path at skip_from_y."""
    ax.add_patch(Circle((x, y), 0.22, facecolor="white", edgecolor="#444444", linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=12)
    ax.plot([x, skip_x, skip_x], [skip_from_y, skip_from_y, y], color="#444444", lw=1.2)
    _arrow(ax, (skip_x, y), (x - 0.22, y))


def architecture() -> Figure:
    """The path of one token through DeepSeek-V3, each part labelled with the chapter that builds it."""
    fig = Figure(figsize=(8.2, 9.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10.5)
    ax.set_ylim(-0.6, 14.4)
    ax.axis("off")
    x, w = 4.2, 5.6

    ax.text(x, 13.95, "token ids (batch, seq)", ha="center", va="center", fontsize=10)
    _arrow(ax, (x, 13.75), (x, 13.3))
    _box(ax, x, 12.95, w, 0.6, "embedding  embed: 129,280 x 7,168  (ch 05)", "embed")

    # The block, repeated 61 times.
    ax.add_patch(FancyBboxPatch((0.45, 3.85), 7.3, 8.1, boxstyle="round,pad=0.05,rounding_size=0.3",
                                facecolor="#f7f7f7", edgecolor="#888888", linestyle="--"))
    ax.text(0.7, 11.65, "Block x 61  (ch 05)", fontsize=10, fontweight="bold", va="center")
    _arrow(ax, (x, 12.65), (x, 11.05))
    _box(ax, x, 10.75, w, 0.55, "RMSNorm  attn_norm  (ch 01)", "norm")
    _arrow(ax, (x, 10.47), (x, 9.95))
    _box(ax, x, 9.35, w, 1.15, "Multi-head Latent Attention  attn  (ch 03)\n128 heads, KV compressed to a 512 latent\n"
         "RoPE + YaRN on 64 of 192 dims per head  (ch 02)", "attention")
    _arrow(ax, (x, 8.77), (x, 8.22))
    _residual_add(ax, x, 8.0, skip_from_y=11.5, skip_x=0.95)
    _arrow(ax, (x, 7.78), (x, 7.3))
    _box(ax, x, 7.0, w, 0.55, "RMSNorm  ffn_norm  (ch 01)", "norm")
    _arrow(ax, (x, 6.72), (x, 6.15))
    _box(ax, x, 5.5, w, 1.25, "DeepSeekMoE  ffn  (ch 04)\n1 shared + 8 of 256 routed experts,\n"
         "sigmoid router with a balancing bias\n(layers 0-2: one dense MLP instead)", "ffn")
    _arrow(ax, (x, 4.87), (x, 4.52))
    _residual_add(ax, x, 4.3, skip_from_y=7.55, skip_x=0.95)

    _arrow(ax, (x, 4.08), (x, 3.2))
    _box(ax, x, 2.9, w, 0.55, "RMSNorm  norm  (ch 01)", "norm")
    _arrow(ax, (x, 2.62), (x, 2.05))
    _box(ax, x, 1.75, w, 0.55, "output head  head: 7,168 -> 129,280  (ch 05)", "embed")
    _arrow(ax, (x, 1.47), (x, 0.95))
    ax.text(x, 0.75, "logits for token t+1  (batch, seq, vocab)", ha="center", va="center", fontsize=10)

    # Multi-Token Prediction: a 62nd block that also sees the next token's embedding.
    _box(ax, 9.1, 2.9, 2.5, 1.5, "MTP module  (ch 07)\none more block that\nalso reads the embedding\n"
         "of token t+1 and\npredicts token t+2", "mtp", fontsize=8.5)
    ax.plot([x, 7.3], [3.6, 3.6], color="#444444", lw=1.2)
    _arrow(ax, (7.3, 3.6), (7.85, 3.25))
    ax.text(7.35, 3.8, "pre-norm hidden state", fontsize=8, color="#444444")

    ax.text(0.4, -0.3, "Around the model: loading the released weights (ch 06), training (ch 08), inference with "
            "a latent KV cache (ch 09),\nFP8 weights (ch 10), R1 reasoning with GRPO (ch 11), many GPUs (ch 12).",
            fontsize=8.5, va="center", color="#333333")
    return fig


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:,.2f}{unit}"
    return f"{n:,}"


def parameter_budget() -> Figure:
    """Total and per-token parameters of DeepSeek-V3 671B by component, from ``count_parameters``."""
    count = count_parameters(ModelConfig.from_preset("v3-671b"))
    rows = [(row.component, row.total, row.activated) for row in count.rows]
    rows.append(("MTP module (not in the 671B)", count.mtp, 0))
    rows.sort(key=lambda r: r[1])
    kinds = ["attention" if "attention" in name else "norm" if "norm" in name else
             "mtp" if "MTP" in name else "embed" if ("embed" in name or "head" in name) else "ffn"
             for name, _, _ in rows]

    fig = Figure(figsize=(11, 4.8))
    panels = fig.subplots(1, 2, sharey=True)
    for ax, column, title in ((panels[0], 1, f"stored: {count.total / 1e9:,.1f}B parameters (+ MTP)"),
                              (panels[1], 2, f"activated per token: {count.activated / 1e9:,.2f}B")):
        values = [r[column] for r in rows]
        ax.barh(range(len(rows)), [v / 1e9 for v in values], color=[COLOURS[k] for k in kinds],
                edgecolor="#444444")
        for i, v in enumerate(values):
            ax.text(v / 1e9, i, "  " + (_human(v) if v else "-"), va="center", fontsize=8)
        ax.set_xlim(0, max(values) / 1e9 * 1.3)
        ax.set_xlabel("billions of parameters")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    panels[0].set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    routed = next(row for row in count.rows if row.component.startswith("routed"))
    fig.suptitle(f"DeepSeek-V3: {routed.total / count.total:.0%} of the weights are routed experts, but a token uses "
                 f"{count.config.n_activated_experts} of {count.config.n_routed_experts}", fontsize=11)
    fig.tight_layout()
    return fig


FIGURES = {"architecture": architecture, "parameter_budget": parameter_budget}
