"""Ablation studies: what each DeepSeek-V3 choice buys at a size a laptop trains (chapter 13).

A *study* trains V3's choice and its alternatives (the *variants*) on the same tokenizer, the same
data in the same batch order, from the same seeds, each for the same number of training FLOPs
(iso-FLOP), and compares their validation bits per byte, speed, cache and balance:

    budget F = steps x tokens per step x FLOPs per token of V3's variant   (--steps, or --flops F)
    variant v trains  round(F / (tokens per step x FLOPs per token of v))  steps

so a variant that spends more FLOPs per token (a wider dense layer, an MTP module) sees fewer tokens.
FLOPs per token follow ``params.training_flops_per_token`` (6 x activated matrix parameters + attention).
``--iso tokens`` instead trains every variant for the same ``--steps``, hence the same tokens: the papers'
setting for MTP (V3 report, Table 4) and for the dense upper bound of DeepSeekMoE, which compare models
trained on the same data whatever their training FLOPs.

Each run (one variant, one seed) is its own process, so its peak memory is its own and a crash loses
only that run; ``results.json`` is rewritten after every run, and ``--resume`` continues a study
that was interrupted, or adds seeds to a finished one. ``results.json``::

    {"study", "command", "settings", "runs": [{"variant", "seed", "flops_per_token", "tokens", "steps",
      "val_loss", "val_bpb", "tokens_per_s", "wall_s", "kv_bytes_per_token", "peak_memory_bytes",
      "max_vio", "parameters", "activated_parameters", "curve": [...], ...}],
     "summary": {variant: {metric: {"mean", "std", "n"}}},
     "comparisons": {"<variant>_minus_<v3 variant>_val_bpb": {"mean", "std", "n"}, ...}}

``max_vio`` is the maximal load violation of Wang et al. 2024 (max_i load_i / mean load - 1) of the
validation tokens, averaged over the MoE layers (None for a dense model). Comparisons are paired:
the difference of two variants trained from the same seed, then its mean and spread over seeds.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .balancing import moe_layers
from .config import ModelConfig, PRESETS
from .data import PackedBatches, find_documents, load_corpus, prepare_corpus, token_byte_lengths, validation_batches
from .device import autocast, deterministic_kernels, peak_memory, reset_peak_memory, resolve_device, synchronize
from .generation import GenerationStats, generate
from .optim import build_optimizer, learning_rate
from .params import count_parameters, training_flops_per_token
from .run_plots import write_study_plots
from .runfolder import atomic_path, lock_folder, read_json, write_json
from .train import TrainConfig, build_model, train_step, validation_metrics
from .validation import UserError


class AblationError(UserError):
    """A study that cannot run or continue. The message names the option or the file."""


@dataclass(frozen=True)
class Variant:
    """One arm of a study: a slug (``results.json``'s ``variant``), what it is, and its ModelConfig changes."""

    slug: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A question, V3's answer (``reference``, the first variant) and the alternatives.

    ``base``: ModelConfig changes every variant shares (on top of the preset); ``measure``: the extra
    measurements of this study ("acceptance": MTP speculative decoding, "domains": expert load per
    source domain).
    """

    name: str
    question: str
    variants: tuple[Variant, ...]
    base: dict[str, Any] = field(default_factory=dict)
    measure: tuple[str, ...] = ()

    @property
    def reference(self) -> Variant:
        return self.variants[0]

    def variant(self, slug: str) -> Variant:
        for variant in self.variants:
            if variant.slug == slug:
                return variant
        raise AblationError(f"study {self.name!r} has no variant {slug!r}; it has "
                            f"{[v.slug for v in self.variants]}")

    def model_config(self, preset: str, variant: Variant, **changes: Any) -> ModelConfig:
        return ModelConfig.from_preset(preset, **{**self.base, **variant.overrides, **changes})


# The tiny preset's MoE layer activates 1 shared + 4 routed experts of width 64 (320 hidden units per token)
# out of 17 x 64 = 1,088. The moe study holds activated (320) and, for the MoE variants, total (1,280) fixed.
NO_MTP = {"n_mtp_layers": 0}  # MTP adds a block per depth: only the mtp study trains it
STUDIES: dict[str, Study] = {study.name: study for study in [
    Study("attention", "MLA against the attention it replaces: loss, speed and cache per token", (
        Variant("mla", "Multi-head Latent Attention (V3): cache the latent and one rotated key"),
        Variant("mha", "multi-head attention: per-head keys and values, RoPE on the whole head",
                {"attention": "mha"}),
        Variant("gqa-2", "grouped-query attention, 2 key/value heads for 4 query heads",
                {"attention": "gqa", "n_kv_heads": 2}),
        Variant("mqa", "multi-query attention: one key/value head", {"attention": "mqa"}),
    ), base=NO_MTP),
    Study("moe", "fine-grained + shared experts against dense layers and coarse experts", (
        Variant("moe-fine-shared", "DeepSeekMoE (V3): 1 shared + 19 routed experts of width 64, top-4",
                {"n_routed_experts": 19, "n_activated_experts": 4, "n_shared_experts": 1}),
        Variant("moe-fine", "20 routed experts of width 64, top-5, no shared expert",
                {"n_routed_experts": 20, "n_activated_experts": 5, "n_shared_experts": 0}),
        Variant("moe-coarse", "8 routed experts of width 160, top-2, no shared expert (GShard-like)",
                {"n_routed_experts": 8, "n_activated_experts": 2, "n_shared_experts": 0, "moe_inter_dim": 160}),
        Variant("dense-iso-active", "dense SwiGLU of width 320: the MoE's activated parameters",
                {"dense_ffn_dim": 320}),
        Variant("dense-iso-total", "dense SwiGLU of width 1,280: the MoE's total parameters",
                {"dense_ffn_dim": 1280}),
    ), base={**NO_MTP, "n_expert_groups": 1, "n_limited_groups": 1}),
    Study("balancing", "auxiliary-loss-free balancing against an auxiliary loss and against nothing", (
        Variant("bias", "V3: the bias update only (gamma = 0.001), no loss", {"balance_loss_alpha": 0.0}),
        Variant("aux-loss", "V2 / GShard: an expert-level auxiliary loss, alpha = 0.01, no bias",
                {"gate_bias": False, "balance_loss_alpha": 0.0, "expert_balance_loss_alpha": 0.01}),
        Variant("none", "no balancing at all", {"gate_bias": False, "balance_loss_alpha": 0.0}),
        Variant("bias-fast", "the bias update ten times faster (gamma = 0.01): V3's gamma was set for 14.8T tokens, "
                "not a few hundred steps", {"balance_loss_alpha": 0.0, "bias_update_speed": 0.01}),
    ), base=NO_MTP, measure=("domains",)),
    Study("gate", "the sigmoid gate (V3) against the softmax gate (V2)", (
        Variant("sigmoid", "V3: sigmoid affinities, top-k weights renormalised"),
        Variant("softmax", "V3 with V2's softmax gate: softmax over the experts, the top-k probabilities as weights "
                "(not renormalised); the bias and the rest of V3's routing kept", {"score_func": "softmax"}),
    ), base=NO_MTP),
    Study("mtp", "Multi-Token Prediction: the main model's loss at equal FLOPs, and speculative decoding", (
        Variant("mtp-1", "V3: one MTP module (predicts the token after next), lambda = 0.3", {"n_mtp_layers": 1}),
        Variant("mtp-0", "next-token prediction only", {"n_mtp_layers": 0}),
        Variant("mtp-2", "two chained MTP modules", {"n_mtp_layers": 2}),
    ), measure=("acceptance",)),
]}

# The summary's metrics, in the order of the printed table.
METRICS = ("val_bpb", "val_loss", "tokens_per_s", "wall_s", "flops_per_token", "tokens", "kv_bytes_per_token",
           "peak_memory_bytes", "max_vio", "acceptance_rate", "domain_specialisation")


DEFAULT_STEPS = 200  # of V3's variant, 8 x 128 tokens each: a study of 3 seeds in minutes on two CPU cores


@dataclass
class Settings:
    """Everything a study's runs share; ``results.json`` keeps it, and ``--resume`` must match it."""

    study: str
    seeds: int = 3
    steps: int | None = None  # of V3's variant; None: ``flops`` decides, or DEFAULT_STEPS without ``flops``
    flops: float | None = None  # per run; None: from ``steps``
    preset: str = "tiny"
    data_dir: str | None = None
    corpus_dir: str = "runs/ablate/corpus"
    device: str = "auto"
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 3e-3
    iso: str = "flops"  # "flops": equal training FLOPs; "tokens": every variant trains ``steps`` steps
    evals: int = 6  # validation points along each run (the last at its end)
    eval_batches: int = 4

    def __post_init__(self) -> None:
        if self.steps is None and self.flops is None:
            self.steps = DEFAULT_STEPS

    def validate(self) -> None:
        if self.study not in STUDIES:
            raise AblationError(f"unknown study {self.study!r}; choose one of {sorted(STUDIES)}")
        if self.preset not in PRESETS:
            raise AblationError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        for name in ("seeds", "batch_size", "seq_len", "evals", "eval_batches"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise AblationError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.iso not in ("flops", "tokens"):
            raise AblationError(f"--iso must be 'flops' or 'tokens', got {self.iso!r}")
        if self.iso == "tokens" and self.steps is None:
            raise AblationError("--iso tokens trains every variant for --steps steps: give --steps, not --flops")
        if (self.steps is None) == (self.flops is None):
            raise AblationError("give exactly one budget: --steps S (of V3's variant) or --flops F (per run)")
        if self.steps is not None and (type(self.steps) is not int or self.steps < 1):
            raise AblationError(f"--steps must be a positive integer, got {self.steps!r}")
        if self.flops is not None and not (isinstance(self.flops, (int, float)) and math.isfinite(self.flops)
                                           and self.flops > 0):
            raise AblationError(f"--flops must be a positive number, got {self.flops!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise AblationError(f"--lr must be a positive number, got {self.lr!r}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


# ----------------------------------------------------------------------------- one run (in its own process)
def budget(settings: Settings, vocab_size: int) -> float:
    """Training FLOPs of every run of the study."""
    if settings.flops is not None:
        return float(settings.flops)
    study = STUDIES[settings.study]
    reference = study.model_config(settings.preset, study.reference, vocab_size=vocab_size)
    return settings.steps * settings.tokens_per_step * training_flops_per_token(reference, settings.seq_len)


def steps_for(settings: Settings, config: ModelConfig, total_flops: float) -> int:
    """Optimizer steps that spend ``total_flops`` on ``config`` (at least 1); ``settings.steps`` with ``--iso tokens``."""
    if settings.iso == "tokens":
        return settings.steps
    return max(1, round(total_flops / (settings.tokens_per_step * training_flops_per_token(config, settings.seq_len))))


@torch.no_grad()
def expert_loads(model: torch.nn.Module, batches: list[torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Tokens routed to each expert of each main-model MoE layer over ``batches`` (evaluation mode).

    Returns {"layer_N": (n_routed_experts,) int64}; empty for a dense model.
    """
    loads: dict[str, torch.Tensor] = {}

    def count(name: str):
        def hook(gate, inputs, outputs):
            picks = torch.bincount(outputs[1].flatten(), minlength=gate.weight.size(0)).cpu()
            loads[name] = loads.get(name, 0) + picks
        return hook

    handles = [moe.gate.register_forward_hook(count(name)) for name, moe in moe_layers(model).items()]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            with autocast(device):
                model(batch[:, :-1].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return loads


def max_violation(loads: dict[str, torch.Tensor]) -> float | None:
    """MaxVio (Wang et al. 2024): max_i load_i / mean_i load_i - 1 per layer, averaged over the layers.

    0 is perfect balance; 1 means the busiest expert gets twice its share. None without MoE layers.
    """
    values = [(load.max() / load.float().mean() - 1).item() for load in loads.values() if load.sum() > 0]
    return sum(values) / len(values) if values else None


def specialisation(domain_loads: dict[str, dict[str, list[float]]]) -> float | None:
    """How differently the domains use the experts: the total-variation distance between a domain's share of
    picks per expert and the share over all domains, averaged over domains and layers (0: every domain routes
    alike; 1 - 1/domains when each domain has experts of its own, 0.5 for two)."""
    domains = list(domain_loads)
    if not domains or not domain_loads[domains[0]]:
        return None
    distances = []
    for layer in domain_loads[domains[0]]:
        shares = torch.tensor([domain_loads[d][layer] for d in domains])  # (domains, experts), rows sum to 1
        overall = shares.mean(dim=0)
        distances += (0.5 * (shares - overall).abs().sum(dim=1)).tolist()
    return sum(distances) / len(distances)


def run_one(settings: Settings, slug: str, seed: int, total_flops: float,
            domains: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Train one variant from one seed for ``total_flops`` and measure it. Runs in the current process."""
    study = STUDIES[settings.study]
    variant = study.variant(slug)
    corpus = load_corpus(settings.corpus_dir)
    vocab_size = corpus.tokenizer.get_vocab_size()
    config = study.model_config(settings.preset, variant, vocab_size=vocab_size)
    steps = steps_for(settings, config, total_flops)
    train_config = TrainConfig(preset=settings.preset, model_overrides={**study.base, **variant.overrides},
                               batch_size=settings.batch_size, seq_len=settings.seq_len, lr=settings.lr,
                               steps=steps, seed=seed, progress=False, experts="auto", attention="auto")
    device = resolve_device(settings.device)
    reset_peak_memory(device)
    with deterministic_kernels(device):
        model = build_model(config, train_config, device)
        optimizer = build_optimizer(model, train_config, device)
        batches = PackedBatches(corpus.train, settings.batch_size, settings.seq_len, seed)
        val_batches = validation_batches(corpus.val, settings.batch_size, settings.seq_len, settings.eval_batches)
        token_bytes = torch.from_numpy(token_byte_lengths(corpus.tokenizer))
        per_token = training_flops_per_token(config, settings.seq_len)
        eval_at = {round(steps * i / settings.evals) for i in range(1, settings.evals + 1)}
        seconds, curve = 0.0, []

        def point(step: int) -> None:
            tokens = step * settings.tokens_per_step
            curve.append({"step": step, "tokens": tokens, "flops": tokens * per_token, "seconds": round(seconds, 3),
                          **validation_metrics(model, val_batches, device, token_bytes)})

        point(0)
        for step in range(steps):
            lr = learning_rate(step, train_config.lr, train_config.min_lr, train_config.warmup_steps, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            tick = time.perf_counter()
            train_step(model, optimizer, batches, train_config, device)
            synchronize(device)
            seconds += time.perf_counter() - tick
            if step + 1 in eval_at:
                point(step + 1)
        loads = expert_loads(model, val_batches, device)
        counts = count_parameters(config)
        record: dict[str, Any] = {
            "variant": slug, "seed": seed, "steps": steps, "flops_per_token": per_token,
            "tokens": steps * settings.tokens_per_step, "val_loss": curve[-1]["val_loss"],
            "val_bpb": curve[-1]["val_bpb"], "tokens_per_s": steps * settings.tokens_per_step / seconds,
            "wall_s": seconds, "kv_bytes_per_token": counts.kv_bytes_per_token,
            "peak_memory_bytes": peak_memory(device), "max_vio": max_violation(loads),
            # every parameter (MTP modules included), and those one token of the main model multiplies
            "parameters": counts.total + counts.mtp, "activated_parameters": counts.activated, "curve": curve,
        }
        if "acceptance" in study.measure and config.n_mtp_layers > 0:
            record["acceptance_rate"] = acceptance_rate(model, val_batches)
        if "domains" in study.measure and domains and loads:
            record["domain_loads"] = {name: {layer: (load / load.sum()).tolist() for layer, load in
                                             expert_loads(model, every_window(tokens, settings), device).items()}
                                      for name, tokens in domains.items()}
            record["domain_specialisation"] = specialisation(record["domain_loads"])
    return record


def every_window(tokens: list[int], settings: Settings) -> list[torch.Tensor]:
    """A domain's token stream as (batch, seq_len + 1) windows, all of them (``data.validation_batches``)."""
    return validation_batches(np.asarray(tokens), settings.batch_size, settings.seq_len, max_batches=len(tokens))


def acceptance_rate(model: torch.nn.Module, val_batches: list[torch.Tensor]) -> float:
    """Share of the first MTP module's drafts that greedy decoding accepts (V3 report section 5.4.3: 85-90%),
    continuing 8 validation prompts of 32 tokens by 48 tokens."""
    prompts = [row[:32].tolist() for row in torch.cat(val_batches)[:8]]
    stats = GenerationStats()
    model.eval()
    generate(model, prompts, 48, temperature=0.0, speculative=True, stats=stats)
    model.train()
    return stats.acceptance_rate


def _child(settings: Settings, slug: str, seed: int, total_flops: float, domains, result_path: str) -> None:
    try:
        write_json(result_path, {"record": run_one(settings, slug, seed, total_flops, domains)})
    except BaseException as error:  # reported by the parent, which names the run
        write_json(result_path, {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})


def run_isolated(settings: Settings, slug: str, seed: int, total_flops: float,
                 domains: dict[str, list[int]] | None) -> dict[str, Any]:
    """``run_one`` in a fresh process ("spawn"): its own peak memory, its own threads and random state."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "result.json")
        process = context.Process(target=_child, args=(settings, slug, seed, total_flops, domains, path))
        process.start()
        try:
            process.join()
        except KeyboardInterrupt:
            process.terminate()
            process.join()
            raise
        if not Path(path).is_file():
            raise AblationError(f"the run {slug} (seed {seed}) died without a result (exit code {process.exitcode})")
        result = read_json(path)
    if "error" in result:
        raise AblationError(f"the run {slug} (seed {seed}) failed: {result['error']}\n{result['traceback']}")
    return result["record"]


# ----------------------------------------------------------------------------- domains
def domain_tokens(settings: Settings, corpus, count: int = 4, tokens_each: int = 2048) -> dict[str, list[int]]:
    """Validation text by source: the ``count`` top-level packages (folders) with the most validation
    documents, each as its first ``tokens_each`` tokens. (V3 report, Figures 9-10, routes the Pile's
    domains; the standard library's packages are ours: email, asyncio, xml, ...)."""
    names = corpus.manifest.get("val_names", [])
    packages = Counter(name.split("/")[0] for name in names if "/" in name)
    chosen = [package for package, _ in packages.most_common(count)]
    wanted = set(names)
    documents = {doc.name: doc.text for doc in find_documents(settings.data_dir) if doc.name in wanted}
    domains = {}
    for package in chosen:
        text = "\n".join(documents[name] for name in names if name.startswith(package + "/") and name in documents)
        tokens = corpus.tokenizer.encode(text).ids[:tokens_each]
        if len(tokens) > settings.seq_len + 1:
            domains[package] = tokens
    return domains


# ----------------------------------------------------------------------------- summaries
def mean_std(values: list[float]) -> dict[str, float | int]:
    """{"mean", "std" (sample standard deviation; 0 for one value), "n", "sem"}: sem = std / sqrt(n), the
    standard error of the mean; a mean two or more sems from 0 is a difference worth reading."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "sem": std / math.sqrt(n)}


def summarise(study: Study, runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, comparisons) of the finished runs: each metric's mean and std over seeds per variant, and each
    variant's paired difference from V3's variant (same seed) in val_bpb, and its speed ratio."""
    summary = {}
    for variant in study.variants:
        mine = [r for r in runs if r["variant"] == variant.slug]
        if mine:
            summary[variant.slug] = {metric: mean_std([r[metric] for r in mine]) for metric in METRICS
                                     if all(r.get(metric) is not None for r in mine)}
    comparisons = {}
    reference = {r["seed"]: r for r in runs if r["variant"] == study.reference.slug}
    for variant in study.variants[1:]:
        pairs = [(r, reference[r["seed"]]) for r in runs if r["variant"] == variant.slug and r["seed"] in reference]
        if pairs:
            name = f"{variant.slug}_minus_{study.reference.slug}"
            comparisons[f"{name}_val_bpb"] = mean_std([a["val_bpb"] - b["val_bpb"] for a, b in pairs])
            comparisons[f"{variant.slug}_over_{study.reference.slug}_tokens_per_s"] = mean_std(
                [a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs])
    return summary, comparisons


def summary_table(results: dict[str, Any]) -> str:
    """The summary as a markdown table: one row per variant, mean ± std over seeds."""
    study = STUDIES[results["study"]]
    summary = results["summary"]
    columns = [("val_bpb", "val bits/byte", "{:.4f}"), ("tokens_per_s", "tokens/s", "{:,.0f}"),
               ("wall_s", "train s", "{:.1f}"), ("flops_per_token", "MFLOP/token", "{:.2f}"),
               ("tokens", "tokens", "{:,.0f}"), ("kv_bytes_per_token", "KV bytes/token", "{:,.0f}"),
               ("peak_memory_bytes", "peak MB", "{:,.0f}"), ("max_vio", "MaxVio", "{:.3f}"),
               ("acceptance_rate", "MTP acceptance", "{:.3f}"), ("domain_specialisation", "domain TV", "{:.3f}")]
    columns = [c for c in columns if any(c[0] in summary[v] for v in summary)]
    scale = {"flops_per_token": 1e-6, "peak_memory_bytes": 1e-6}
    lines = ["| variant | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for variant in study.variants:
        if variant.slug not in summary:
            continue
        cells = []
        for metric, _, form in columns:
            stats = summary[variant.slug].get(metric)
            if stats is None:
                cells.append("—")
                continue
            mean, std = (stats[key] * scale.get(metric, 1) for key in ("mean", "std"))
            cells.append(form.format(mean) + (f" ± {form.format(std)}" if stats["n"] > 1 and std else ""))
        lines.append(f"| {variant.slug} | " + " | ".join(cells) + " |")
    n = max((s["val_bpb"]["n"] for s in summary.values()), default=0)
    request = results["settings"]["request"]
    budget_text = (f"the same {request['steps']} steps of {request['batch_size'] * request['seq_len']} tokens"
                   if request.get("iso") == "tokens" else f"the same FLOPs ({results['settings']['total_flops']:.3g})")
    lines.append(f"\nmean ± std over {n} seed(s); each variant trained for {budget_text}; "
                 f"V3's choice: {study.reference.slug}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- a whole study
def run_study(settings: Settings, out_dir: str | Path | None = None, resume: bool = False,
              progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run every (variant, seed) of ``settings.study`` not yet in ``out_dir/results.json``; write the results,
    ``summary.md`` and the figures after each run. Returns the results."""
    settings.validate()
    study = STUDIES[settings.study]
    out = Path(out_dir if out_dir is not None else f"runs/ablate/{settings.study}")
    path = out / "results.json"
    runs: list[dict[str, Any]] = []
    if path.is_file():
        if not resume:
            raise AblationError(f"{out} already holds a study (results.json); continue it with --resume or "
                                "choose another --out")
        previous = read_json(path, error=AblationError)
        request = dict(previous.get("settings", {}).get("request", {}))
        request["seeds"] = settings.seeds  # more (or fewer) seeds extend the same study
        if request != dataclasses.asdict(settings):
            raise AblationError(f"--resume: {path} was run with other settings "
                                f"({previous.get('settings', {}).get('request')}); use the same options (--seeds "
                                "may change) or another --out")
        runs = [r for r in previous["runs"] if r["seed"] < settings.seeds]
    elif resume:
        raise AblationError(f"--resume: {path} does not exist; start the study without --resume")
    out.mkdir(parents=True, exist_ok=True)
    with lock_folder(out):
        vocab_size = PRESETS[settings.preset].vocab_size
        corpus = prepare_corpus(settings.corpus_dir, settings.data_dir, None, vocab_size, progress=progress)
        total_flops = budget(settings, corpus.tokenizer.get_vocab_size())
        domains = domain_tokens(settings, corpus) if "domains" in study.measure else None
        results = {"study": study.name, "question": study.question,
                   "command": command or f"minideepseek ablate {study.name}",
                   "settings": {"request": dataclasses.asdict(settings), "total_flops": total_flops,
                                "corpus": settings.data_dir or "the Python standard library's source",
                                "torch": torch.__version__,
                                "variants": {v.slug: v.description for v in study.variants}},
                   "runs": runs}
        done = {(r["variant"], r["seed"]) for r in runs}
        todo = [(v.slug, seed) for seed in range(settings.seeds) for v in study.variants if (v.slug, seed) not in done]
        bar = tqdm(total=len(todo) + len(done), initial=len(done), desc=f"ablate {study.name}", unit="run",
                   disable=not progress)
        for slug, seed in todo:
            bar.set_postfix_str(f"{slug} seed {seed}")
            runs.append(run_isolated(settings, slug, seed, total_flops, domains))
            runs.sort(key=lambda r: (r["seed"], [v.slug for v in study.variants].index(r["variant"])))
            results["summary"], results["comparisons"] = summarise(study, runs)
            write_json(path, results)
            with atomic_path(out / "summary.md") as tmp:
                tmp.write_text(f"# {study.name}: {study.question}\n\n`{results['command']}`\n\n"
                               + summary_table(results) + "\n")
            write_study_plots(out, results)
            bar.update(1)
        bar.close()
        if not todo:  # nothing left to run: the summary of what is there
            results["summary"], results["comparisons"] = summarise(study, runs)
    return results

