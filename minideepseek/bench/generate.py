"""``minideepseek bench generate``: what MLA's latent cache buys at inference, measured side by side.

Four tables, every ratio measured in one process on one device:

1. **KV cache per token** (exact, from the config): the latent cache, MLA's per-head cache,
   and what MHA / GQA (8 KV heads) / MQA of the same width would store.
2. **One MLA layer decoding** one token per sequence against a long context: from the
   latent cache (absorbed), from the per-head cache (naive), and from the latent cache
   re-expanded every step (the trap). On CUDA at V3's attention dimensions (128 heads, BF16)
   at batch 16 x 4K and 4 x 16K; on a CPU at 16 heads and smaller contexts.
3. **Whole-model generation** (default preset ``mini``): decode tokens/s of ``generate`` with
   each cache against transformers' ``DeepseekV3ForCausalLM.generate`` holding the same
   weights, greedy, at the same batch. Decode speed is measured as
   (new tokens - 1) x batch / (time for N new tokens - time for 1), which removes the prefill.
4. With ``speculative``: MTP speculative decoding on a ``tiny`` model trained for a few
   hundred steps on a synthetic Markov-chain corpus (so the MTP module has something to
   predict): acceptance rate and speed-up over plain decoding, greedy and sampled.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Callable

import torch
from tqdm import tqdm

from . import check_at_least, environment, format_table, require_transformers, time_ms
from ..attention import MLA
from ..checkpoint import save_pretrained
from ..config import ModelConfig
from ..device import resolve_device
from ..generation import GenerationStats, generate
from ..kv_cache import LayerCache, causal_mask, kv_values_per_token, make_layer_cache
from ..model import Transformer
from ..optim import build_optimizer
from ..rope import precompute_freqs_cis
from ..speed import configure_speed
from ..train import TrainConfig, train_step


def cache_memory_table(config: ModelConfig, bytes_per_value: int = 2) -> str:
    """Values and bytes per token (all layers), and the size of a 128K-token context, per scheme."""
    values = kv_values_per_token(config)
    latent = values["MLA latent (absorbed)"]
    rows = []
    for scheme, n in values.items():
        per_token = n * config.n_layers * bytes_per_value
        rows.append([scheme, f"{n:,}", f"{per_token:,}", f"{per_token * 131072 / 2**30:,.1f}", f"{n / latent:.2f}x"])
    return format_table(["scheme", "values/token/layer", f"bytes/token ({config.n_layers} layers)", "GiB at 128K",
                  "vs latent"], rows)


# ------------------------------------------------------------------------------------------ 2. one layer
def layer_config(device: torch.device) -> ModelConfig:
    """V3's attention (128 heads, dim 7168) on CUDA; 16 heads and dim 2048 on a CPU, same head dimensions."""
    config = ModelConfig.from_preset("v3-671b", max_seq_len=16384 + 1)
    return config if device.type == "cuda" else dataclasses.replace(config, n_heads=16, dim=2048)


def filled_caches(mla: MLA, config: ModelConfig, batch: int, context: int, dtype: torch.dtype,
                  device: torch.device) -> dict[str, LayerCache]:
    """The three caches of one layer holding the same random context of ``context`` tokens."""
    caches = {kind: make_layer_cache(kind, config, batch, context + 1, dtype, device)
              for kind in ("absorbed", "naive", "reexpanded")}
    latent = torch.randn(batch, context, config.kv_lora_rank, dtype=dtype, device=device)
    k_pe = torch.randn(batch, context, config.qk_rope_head_dim, dtype=dtype, device=device)
    positions = torch.arange(context, device=device).expand(batch, -1)
    for kind in ("absorbed", "reexpanded"):
        caches[kind].store(positions, latent=latent, k_pe=k_pe)
    for begin in range(0, context, 1024):  # expand in chunks: the whole per-head context at once is GBs
        k, v = mla.expand_kv(latent[:, begin:begin + 1024], k_pe[:, begin:begin + 1024])
        caches["naive"].store(positions[:, begin:begin + 1024], k=k, v=v)
    return caches


def bench_mla_layer(device: torch.device, dtype: torch.dtype, settings: list[tuple[int, int]],
                    repeats: int = 5) -> str:
    """ms per decode step of one MLA layer from each cache, and the speed-ups of the absorbed one."""
    config = layer_config(device)
    torch.manual_seed(0)
    mla = MLA(config).to(device=device, dtype=dtype)
    for p in mla.parameters():
        torch.nn.init.normal_(p, std=0.02)
    rows = []
    for batch, context in tqdm(settings, desc="MLA layer", leave=False):
        caches = filled_caches(mla, config, batch, context, dtype, device)
        x = torch.randn(batch, 1, config.dim, dtype=dtype, device=device)
        positions = torch.full((batch, 1), context, device=device)
        mask = causal_mask(positions, context + 1)
        freqs_cis = precompute_freqs_cis(config, context + 1, device)[positions]
        with torch.inference_mode():
            outputs = {kind: cache.attention(mla, x, freqs_cis, positions, mask) for kind, cache in caches.items()}
            ms = {kind: time_ms(lambda c=cache: c.attention(mla, x, freqs_cis, positions, mask),
                                device, warmup=2, repeat=repeats)
                  for kind, cache in caches.items()}
        reference = outputs["naive"].float()
        error = max(float((outputs[k].float() - reference).norm() / reference.norm()) for k in outputs)
        per_head_gb = caches["naive"].nbytes / 1e9
        rows.append([f"{batch} x {context:,}", f"{ms['naive']:.3f}", f"{ms['reexpanded']:.3f}", f"{ms['absorbed']:.3f}",
                     f"{ms['naive'] / ms['absorbed']:.1f}x", f"{ms['reexpanded'] / ms['absorbed']:.1f}x",
                     f"{per_head_gb:.2f} / {caches['absorbed'].nbytes / 1e9:.3f}", f"{error:.1e}"])
        del caches, outputs
    title = (f"One MLA layer, one decode step (projections + cache write + attention + wo), {config.n_heads} heads, "
             f"dim {config.dim}, latent {config.kv_lora_rank}+{config.qk_rope_head_dim}, {str(dtype).split('.')[-1]}")
    return title + "\n" + format_table(
        ["batch x context", "per-head ms", "re-expand ms", "absorbed ms", "absorbed vs per-head",
         "absorbed vs re-expand", "cache GB per-head / latent", "max rel. diff"], rows)


# ------------------------------------------------------------------------------------------ 3. whole model
def decode_experts(device: torch.device) -> str:
    """The routed-experts path for decoding: one grouped GEMM per projection on a GPU; on a CPU the
    grouped path's per-call stacking of every expert's weights costs more than a decode step."""
    return "grouped" if device.type == "cuda" else "loop"


def transformers_twin(model: Transformer, dtype: torch.dtype, device: torch.device):
    """transformers' DeepseekV3ForCausalLM holding the same weights (through a hub-format checkpoint)."""
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()  # the MTP layer is "unexpected" to transformers, which drops it
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, progress=False)
        twin = DeepseekV3ForCausalLM.from_pretrained(folder, dtype=dtype)
    return twin.to(device).eval()


def bench_model_generate(preset: str, device: torch.device, dtype: torch.dtype, batch_sizes: list[int],
                         prompt_len: int, new_tokens: int, repeats: int = 1) -> str:
    """Decode tokens/s of our generate (both caches) and transformers' generate, same weights and batch."""
    config = ModelConfig.from_preset(preset, max_batch_size=max(batch_sizes), n_mtp_layers=0)
    torch.manual_seed(0)
    experts = decode_experts(device)
    model = configure_speed(Transformer(config).to(device=device, dtype=dtype).eval(), "sdpa", experts)
    twin = transformers_twin(model, dtype, device)

    def ours(kind: str) -> Callable[[torch.Tensor, int], torch.Tensor]:
        return lambda prompts, n: generate(model, prompts, n, temperature=0, cache=kind)

    def theirs(prompts: torch.Tensor, n: int) -> torch.Tensor:
        return twin.generate(prompts, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    rows = []
    for batch in tqdm(batch_sizes, desc="generate", leave=False):
        prompts = torch.randint(0, config.vocab_size, (batch, prompt_len), device=device,
                                generator=torch.Generator(device).manual_seed(batch))
        speeds, tokens = {}, {}
        for name, run in [("ours absorbed", ours("absorbed")), ("ours naive", ours("naive")),
                          ("transformers", theirs)]:
            with torch.inference_mode():
                tokens[name] = run(prompts, new_tokens)
                one = time_ms(lambda: run(prompts, 1), device, warmup=1, repeat=repeats) / 1e3
                full = time_ms(lambda: run(prompts, new_tokens), device, warmup=0, repeat=repeats) / 1e3
            speeds[name] = batch * (new_tokens - 1) / max(full - one, 1e-9)
        same = (tokens["ours absorbed"] == tokens["transformers"].to(tokens["ours absorbed"].device)).float().mean()
        rows.append([batch, f"{speeds['ours naive']:,.0f}", f"{speeds['ours absorbed']:,.0f}",
                     f"{speeds['transformers']:,.0f}", f"{speeds['ours absorbed'] / speeds['transformers']:.2f}x",
                     f"{speeds['ours absorbed'] / speeds['ours naive']:.2f}x", f"{float(same):.0%}"])
    title = (f"Whole-model greedy generation, preset {preset} ({str(dtype).split('.')[-1]}), prompt {prompt_len} "
             f"tokens, {new_tokens} new tokens; decode tokens/s (prefill excluded). Ours: {experts} experts; "
             f"transformers: experts={twin.config._experts_implementation}, "
             f"attention={twin.config._attn_implementation}")
    return title + "\n" + format_table(["batch", "ours naive", "ours absorbed", "transformers",
                                        "absorbed vs transformers", "absorbed vs naive",
                                        "same tokens as transformers"], rows)


# ------------------------------------------------------------------------------------------ 4. speculative
def markov_chain_batches(vocab: int, symbols: int, batch: int, seq: int, seed: int = 0):
    """Endless batches of (batch, seq + 1) tokens from a random first-order Markov chain over ``symbols`` ids.

    Each symbol has three possible successors with probabilities 0.75, 0.2 and 0.05, so the
    next token (and the one after) is predictable but not certain.
    """
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, symbols, (symbols, 3), generator=generator)
    probabilities = torch.tensor([0.75, 0.2, 0.05])
    offset = vocab // 2  # use ids from the middle of the vocabulary: nothing special about 0 .. symbols
    while True:
        tokens = torch.empty(batch, seq + 1, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, symbols, (batch,), generator=generator)
        for t in range(seq):
            choice = torch.multinomial(probabilities.expand(batch, -1), 1, generator=generator).squeeze(1)
            tokens[:, t + 1] = successors[tokens[:, t], choice]
        yield tokens + offset


def train_tiny_on_markov_chain(steps: int, device: torch.device) -> tuple[Transformer, torch.Tensor]:
    """A ``tiny`` model (with its MTP module) trained with the trainer's step (bias update included) on the
    chain; and 16 prompts."""
    config = TrainConfig.for_preset("tiny", steps=steps, lr=3e-3, weight_decay=0.0, progress=False)
    torch.manual_seed(config.seed)
    model = configure_speed(Transformer(ModelConfig.from_preset("tiny", max_batch_size=16)).to(device),
                            config.attention, "grouped").train()
    optimizer = build_optimizer(model, config, device)
    batches = markov_chain_batches(model.config.vocab_size, symbols=64, batch=config.batch_size, seq=64)
    progress = tqdm(range(steps), desc="training tiny on a Markov chain", leave=False)
    for _ in progress:
        losses = train_step(model, optimizer, batches, config, device)
        progress.set_postfix(main=f"{losses['train_loss']:.2f}", mtp=f"{losses['mtp_loss']:.2f}")
    return model.eval(), next(batches)[:, :16].to(device)


def bench_speculative(device: torch.device, steps: int, new_tokens: int, batch_sizes: list[int]) -> str:
    """Acceptance rate and speed-up of MTP speculative decoding on the trained tiny model."""
    model, prompts = train_tiny_on_markov_chain(steps, device)
    configure_speed(model, "sdpa", decode_experts(device))
    rows = []
    for batch in batch_sizes:
        for temperature in (0.0, 1.0):
            kwargs = dict(temperature=temperature, seed=0)
            run = {}
            for speculative in (False, True):
                stats = GenerationStats()
                generate(model, prompts[:batch], 2, speculative=speculative, **kwargs)  # warm-up
                generate(model, prompts[:batch], new_tokens, speculative=speculative, stats=stats, **kwargs)
                run[speculative] = stats
            plain, spec = run[False], run[True]
            rows.append([batch, "greedy" if temperature == 0 else "T = 1", f"{spec.acceptance_rate:.1%}",
                         f"{spec.new_tokens / spec.forward_passes / batch:.2f}",
                         f"{plain.tokens_per_second:,.0f}", f"{spec.tokens_per_second:,.0f}",
                         f"{spec.tokens_per_second / plain.tokens_per_second:.2f}x"])
    title = (f"MTP speculative decoding, tiny model trained {steps} steps on a Markov chain "
             f"(64 symbols, successors 0.75/0.2/0.05), {new_tokens} new tokens, prompt 16")
    return title + "\n" + format_table(["batch", "decoding", "draft acceptance", "tokens per main forward / row",
                                        "plain tokens/s", "speculative tokens/s", "speed-up"], rows)


# ------------------------------------------------------------------------------------------ entry point
def run(device: str = "auto", *, quick: bool = False, preset: str = "mini", speculative: bool = False,
        layer: bool = True, model: bool = True, train_steps: int | None = None) -> str:
    """The report of ``minideepseek bench generate``: the cache sizes, then the tables that ``layer``,
    ``model`` and ``speculative`` ask for.

    On a CPU, ``quick`` shortens the layer's contexts and the generations; with ``speculative`` it
    trains the tiny model for 50 steps instead of ``train_steps`` (default 300).
    """
    check_at_least(1, train_steps=train_steps)
    if model:
        require_transformers()
    device = resolve_device(device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    sections = [environment(device),
                "KV cache per token, V3 (BF16)\n" + cache_memory_table(ModelConfig.from_preset("v3-671b"))]
    if layer:
        settings = [(16, 4096), (4, 16384)] if cuda else ([(4, 512)] if quick else [(4, 1024), (1, 4096)])
        sections.append(bench_mla_layer(device, dtype, settings))
    if model:
        batches, prompt_len, new = ([1, 32], 128, 128) if cuda else ([1, 4], 32, 8 if quick else 24)
        sections.append(bench_model_generate(preset, device, dtype, batches, prompt_len, new))
    if speculative:
        steps = train_steps if train_steps is not None else (50 if quick else 300)
        sections.append(bench_speculative(device, steps, 32 if quick else 128, [1, 8]))
    return "\n\n".join(sections)
