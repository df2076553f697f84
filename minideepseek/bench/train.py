"""``minideepseek bench train``: whole training steps of our model and of transformers', same config and batch.

Forward, backward and AdamW (ours also checks the gradient norm for NaN and moves the gate biases:
``optim.optimizer_step``, as every training loop here does) of our
``Transformer`` and of transformers' ``DeepseekV3ForCausalLM`` built from the same config: tokens/s,
achieved TFLOP/s, MFU and peak memory. On CUDA the weights are bf16 and the steps run under bf16
autocast; on a CPU everything is fp32. MFU convention: see ``params.training_flops_per_token``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import BenchError, check_at_least, environment, format_table, hf_config, require_transformers, time_ms
from ..config import ModelConfig
from ..device import autocast, resolve_device
from ..losses import compute_loss
from ..model import Transformer
from ..optim import optimizer_step
from ..params import training_flops_per_token
from ..speed import configure_speed
from ..validation import is_number

H100_BF16_PEAK_FLOPS = 989e12  # dense bf16 tensor-core peak of an H100 SXM (not the 1979 "with sparsity")


@dataclass
class TrainResult:
    name: str
    tokens_per_s: float
    flops_per_token: float
    peak_memory_gb: float | None


def optimizer_for(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda")


def ours_step(config: ModelConfig, batch: torch.Tensor, device: torch.device, attention: str, experts: str,
              compiled: bool = False) -> tuple[torch.nn.Module, Callable[[], None]]:
    """Our Transformer with the given attention backend and experts path, its AdamW, and one training step."""
    torch.manual_seed(0)
    model = Transformer(config).to(device, torch.bfloat16 if device.type == "cuda" else torch.float32).train()
    configure_speed(model, attention=attention, experts=experts)
    if compiled:
        for block in [*model.layers, *(m.block for m in model.mtp)]:
            block.compile()
    optimizer = optimizer_for(model, device)

    def step():
        with autocast(device):
            loss = compute_loss(model, batch).loss
        loss.backward()
        optimizer_step(model, optimizer, grad_clip=None)
    return model, step


def hf_step(config: ModelConfig, batch: torch.Tensor, device: torch.device, experts: str,
            compiled: bool = False) -> tuple[torch.nn.Module, Callable[[], None]]:
    """transformers' DeepseekV3ForCausalLM with the named experts backend, its AdamW, and one training step
    (no bias update: transformers' model trains no router bias)."""
    from transformers import DeepseekV3ForCausalLM

    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(hf_config(config, experts))
    model = model.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32).train()
    if compiled:
        for layer in model.model.layers:
            layer.compile()
    optimizer = optimizer_for(model, device)
    inputs, targets = batch[:, :-1], batch[:, 1:]

    def step():
        with autocast(device):
            logits = model(input_ids=inputs, use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())  # the loss ours computes
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, step


def measure(preset: str, tokens: int, seq: int, steps: int, warmup: int, device: torch.device, compile: bool,
            mtp_layers: int) -> list[TrainResult]:
    """Time ``steps`` training steps (after ``warmup``) of every variant on one batch of tokens // seq rows."""
    config = ModelConfig.from_preset(preset, n_mtp_layers=mtp_layers)
    if seq > config.max_seq_len:
        raise BenchError(f"--seq {seq} exceeds the preset's max_seq_len {config.max_seq_len}")
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, config.vocab_size, (tokens // seq, seq + 1), generator=generator).to(device)

    plain = ModelConfig.from_preset(preset, n_mtp_layers=0)  # transformers' model has no MTP
    # (name, the config whose FLOPs it computes, a builder returning (model, step function))
    variants = [
        ("ours: eager attention, loop experts", config, partial(ours_step, config, batch, device, "eager", "loop")),
        ("ours: sdpa, grouped experts", config, partial(ours_step, config, batch, device, "sdpa", "grouped")),
        ("transformers: experts eager", plain, partial(hf_step, plain, batch, device, "eager")),
        ("transformers: experts grouped_mm", plain, partial(hf_step, plain, batch, device, "grouped_mm")),
    ]
    if compile:
        variants.insert(2, ("ours: sdpa, grouped, compiled", config,
                            partial(ours_step, config, batch, device, "sdpa", "grouped", compiled=True)))
        variants.append(("transformers: experts grouped_mm, compiled", plain,
                         partial(hf_step, plain, batch, device, "grouped_mm", compiled=True)))

    results = []
    for name, variant_config, build in tqdm(variants, desc="bench train", leave=False):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model, step = build()
        ms = time_ms(step, device, warmup, steps)
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
        results.append(TrainResult(name, tokens / ms * 1e3, training_flops_per_token(variant_config, seq), peak))
        del model, step
    return results


def run(device: str = "auto", *, quick: bool = False, preset: str = "mini", tokens: int | None = None,
        seq: int | None = None, steps: int | None = None, warmup: int | None = None, compile: bool | None = None,
        mtp_layers: int = 0, peak_tflops: float | None = None) -> str:
    """The report of ``minideepseek bench train``: the training-throughput table.

    ``tokens`` per step = batch x ``seq``. Defaults: 16384 tokens in rows of 1024, 10 timed steps after
    3 untimed ones; ``quick``: 1024 tokens in rows of 128, 2 steps after 1. ``mtp_layers`` sets D for
    our model (transformers has no MTP, so the default 0 keeps the two architectures identical).
    ``compile`` (default: on CUDA) adds the variants with every decoder layer compiled
    (``torch.compile``, as torchtitan does). ``peak_tflops``: the peak for MFU (default on CUDA: an H100's).
    """
    tokens = tokens if tokens is not None else (1024 if quick else 16384)
    seq = seq if seq is not None else (128 if quick else 1024)
    steps = steps if steps is not None else (2 if quick else 10)
    warmup = warmup if warmup is not None else (1 if quick else 3)
    check_at_least(1, tokens=tokens, seq=seq, steps=steps)
    check_at_least(0, warmup=warmup, mtp_layers=mtp_layers)
    if peak_tflops is not None and not (is_number(peak_tflops) and peak_tflops > 0):
        raise BenchError(f"--peak-tflops must be positive, got {peak_tflops}")
    if tokens % seq:
        raise BenchError(f"--tokens ({tokens}) must be a multiple of --seq ({seq})")
    require_transformers()
    device = resolve_device(device)
    compile = device.type == "cuda" if compile is None else compile
    if peak_tflops is None and device.type == "cuda":
        peak_tflops = H100_BF16_PEAK_FLOPS / 1e12

    results = measure(preset, tokens, seq, steps, warmup, device, compile, mtp_layers)
    gemm = gemm_tflops(device)  # the device's own large-GEMM throughput, measured in this run
    baseline = next((r.tokens_per_s for r in results if r.name == "transformers: experts eager"), None)
    rows = []
    for r in results:
        achieved = r.tokens_per_s * r.flops_per_token / 1e12
        rows.append([r.name, f"{r.tokens_per_s:,.0f}", f"{achieved:.3g}",
                     f"{100 * achieved / peak_tflops:.2f}" if peak_tflops else "-",
                     f"{100 * achieved / gemm:.0f}",
                     f"{r.peak_memory_gb:.2f}" if r.peak_memory_gb is not None else "-",
                     f"{r.tokens_per_s / baseline:.1f}x" if baseline else "-"])
    weights = "bf16 weights, bf16 autocast" if device.type == "cuda" else "fp32"
    peak_note = f"MFU against {peak_tflops:g} TFLOP/s" if peak_tflops else "MFU: no peak given (--peak-tflops)"
    title = (f"Training step (forward, backward, AdamW; ours also updates the gate biases), preset {preset} "
             f"(MTP depth {mtp_layers} for ours), {tokens // seq} x {seq} tokens, {weights}; "
             f"{peak_note}; FLOPs/token = 6 N_active + attention term")
    title += (f"; GEMM % = share of this device's large-GEMM throughput measured in the same run "
              f"({gemm * 1e3:,.1f} GFLOP/s, {GEMM_SIZE}^3 {'bf16' if device.type == 'cuda' else 'fp32'})")
    return "\n\n".join([environment(device), format_table(
        ["model", "tokens/s", "TFLOP/s", "MFU %", "GEMM %", "peak GB", "vs transformers eager"], rows, title)])


GEMM_SIZE = 2048


def gemm_tflops(device: torch.device, size: int = GEMM_SIZE, repeat: int = 3) -> float:
    """TFLOP/s of one large square matrix product on ``device`` (bf16 on CUDA, fp32 elsewhere): the
    ceiling a training step's matrix products could reach here, measured rather than taken from a sheet."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, device, warmup=1, repeat=repeat)
    return 2 * size**3 / (ms / 1e3) / 1e12
