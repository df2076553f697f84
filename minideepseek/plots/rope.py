"""Chapter 02 figures: YaRN's frequency blending across dimensions, and what RoPE does to attention scores."""

import math

import numpy as np
from matplotlib.figure import Figure

from ..config import ModelConfig
from ..rope import rope_frequencies, yarn_correction_range

CHAPTER = "02_rope_yarn"


def _v3_with_and_without_yarn() -> tuple[ModelConfig, ModelConfig]:
    """V3 as released (YaRN on: max_seq_len 16384 > original 4096) and the same model with YaRN off."""
    v3 = ModelConfig.from_preset("v3-671b")
    return v3, ModelConfig.from_preset("v3-671b", max_seq_len=v3.original_seq_len)


def yarn_frequencies() -> Figure:
    """f_i with and without YaRN for every pair i of V3's 64 rotary dims, with the boundaries low=10, high=23."""
    v3, plain = _v3_with_and_without_yarn()
    original, yarn = rope_frequencies(plain).numpy(), rope_frequencies(v3).numpy()
    low, high = yarn_correction_range(v3)
    pairs = np.arange(len(original))
    rotations = v3.original_seq_len * original / (2 * math.pi)  # turns of pair i over the original context

    fig = Figure(figsize=(8, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.semilogy(pairs, original, "o-", ms=3.5, label="original RoPE: $f_i = \\theta^{-2i/d}$")
    top.semilogy(pairs, yarn, "s-", ms=3.5, label=f"YaRN (scale s = {v3.rope_factor:g})")
    top.semilogy(pairs, original / v3.rope_factor, ":", color="#888888", label="$f_i / s$ (full interpolation)")
    top.set_ylabel("frequency $f_i$ (radians per position)")
    top.legend(fontsize=9, loc="upper right")
    bottom.semilogy(pairs, rotations, "o-", ms=3.5, color="#555555")
    bottom.axhline(v3.beta_fast, color="#2ca02c", ls="--", lw=1, label=f"$\\beta_{{fast}}$ = {v3.beta_fast} turns")
    bottom.axhline(v3.beta_slow, color="#d62728", ls="--", lw=1, label=f"$\\beta_{{slow}}$ = {v3.beta_slow} turn")
    bottom.set_ylabel(f"turns over {v3.original_seq_len:,} tokens")
    bottom.set_xlabel(f"pair index i (dims 2i, 2i+1 of the {v3.qk_rope_head_dim} rotary dims)")
    bottom.legend(fontsize=9, loc="lower left")
    for ax in (top, bottom):
        ax.axvspan(low, high, color="#ffdd99", alpha=0.5, lw=0)
        ax.axvline(low, color="#2ca02c", lw=1)
        ax.axvline(high, color="#d62728", lw=1)
        ax.grid(alpha=0.3)
    label_y = original[-1] / v3.rope_factor / 4
    top.set_ylim(label_y / 3, original[0] * 2)
    top.text(low / 2, label_y, f"i <= {low}: kept", ha="center", fontsize=9)
    top.text((low + high) / 2, label_y, "blended", ha="center", fontsize=9)
    top.text((high + pairs[-1]) / 2, label_y, f"i >= {high}: divided by {v3.rope_factor:g}", ha="center", fontsize=9)
    top.set_title(f"YaRN in DeepSeek-V3: low = {low}, high = {high}", fontsize=11)
    fig.tight_layout()
    return fig


def attention_vs_distance() -> Figure:
    """The score of a query and a key that are both all-ones, against their distance, with and without YaRN.

    Rotating both by their positions leaves q . k = sum_i 2 cos(delta * f_i): a function of the distance
    delta alone. Normalised by the unrotated score, it is the mean of cos(delta * f_i) over the pairs.
    """
    v3, plain = _v3_with_and_without_yarn()
    extended = int(v3.rope_factor * v3.original_seq_len)  # the context YaRN was built for (hub: 163,840)
    distance = np.logspace(0, math.log10(extended * 1.5), 20000)
    window = np.ones(301) / 301  # a running mean over ~0.08 decades shows the trend under the oscillation
    fig = Figure(figsize=(8.5, 4.2))
    ax = fig.subplots()
    for config, label, colour in ((plain, "original RoPE", "#1f77b4"), (v3, f"YaRN, s = {v3.rope_factor:g}", "#ff7f0e")):
        freqs = rope_frequencies(config).double().numpy()
        score = np.cos(np.outer(distance, freqs)).mean(axis=1)
        ax.plot(distance, score, lw=0.5, alpha=0.35, color=colour)
        ax.plot(distance[150:-150], np.convolve(score, window, mode="valid"), lw=2, color=colour,
                label=f"{label} (running mean)")
    for position, text in ((v3.original_seq_len, f"original context {v3.original_seq_len:,}"),
                           (extended, f"{v3.rope_factor:g} x {v3.original_seq_len:,}")):
        ax.axvline(position, color="#444444", ls="--", lw=0.8)
        ax.text(position * 1.08, 0.9, text, fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("relative distance t - s (tokens)")
    ax.set_ylabel("$q_t \\cdot k_s \\, / \\, q \\cdot k$   (q = k = all ones)")
    ax.set_title("RoPE makes the score depend on distance alone and decay with it;\n"
                 "YaRN stretches the slow dimensions so the decay reaches further", fontsize=10)
    ax.legend(fontsize=9, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


FIGURES = {"yarn_frequencies": yarn_frequencies, "attention_vs_distance": attention_vs_distance}
