"""Benchmarks that print tables: ``minideepseek bench moe`` and ``minideepseek bench train``.

Every figure is measured in one process, against baselines run on the same device with the
same config and inputs, so the *ratios* survive hardware and library changes. Each table
starts with the device, torch and transformers versions.

* ``bench moe``: one MoE layer, forward + backward over ``--tokens`` tokens: our readable
  loop and our grouped path against transformers' ``DeepseekV3MoE`` with its ``eager`` and
  ``grouped_mm`` experts backends, all holding the same weights; then the routed experts alone
  (the grouped expert GEMMs) in TFLOP/s.
* ``bench train``: whole training steps (forward, backward, AdamW, bias update) of our
  ``Transformer`` and of transformers' ``DeepseekV3ForCausalLM`` built from the same config,
  fed the same batch: tokens/s, achieved TFLOP/s, MFU, peak memory.

On CUDA the weights are bf16 and the steps run under bf16 autocast; on CPU everything is
fp32 (CPU bf16 matmuls are several times slower than fp32). MFU convention: see
``training_flops_per_token``.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .balancing import update_expert_biases
from .config import ModelConfig
from .losses import compute_loss
from .model import Transformer
from .moe import MoE, grouped_mm_supported
from .params import attention_tensors, count_parameters, gate_tensors, mlp_tensors, size
from .speed import configure_speed

H100_BF16_PEAK_FLOPS = 989e12  # dense bf16 tensor-core peak of an H100 SXM (not the 1979 "with sparsity")


# --------------------------------------------------------------------------- shared helpers
def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible")
    return torch.device(name)


def environment(device: torch.device) -> str:
    """One line naming what the numbers were measured on."""
    import transformers

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"device: {where} | torch {torch.__version__} | transformers {transformers.__version__}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(step: Callable[[], object], device: torch.device, warmup: int, repeat: int) -> float:
    """Median wall time of ``step()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (what training uses); nothing on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain-text table: the first column left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).rjust(w) if j else str(cell).ljust(w) for j, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    print(format_table(header, rows))


def hf_config(config: ModelConfig, experts: str):
    """transformers' DeepseekV3Config of the same architecture, with its experts backend named."""
    import transformers
    from transformers import DeepseekV3Config

    transformers.logging.set_verbosity_error()
    hf = DeepseekV3Config(**config.to_hf_dict())
    hf._experts_implementation = experts  # "eager" (a loop over experts) or "grouped_mm"
    return hf


# --------------------------------------------------------------------------- bench moe
def hf_moe_like(moe: MoE, config: ModelConfig, experts: str) -> torch.nn.Module:
    """transformers' DeepseekV3MoE holding exactly the weights of ``moe``."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    hf = DeepseekV3MoE(hf_config(config, experts))
    with torch.no_grad():
        hf.gate.weight.copy_(moe.gate.weight)
        if moe.gate.bias is not None:
            hf.gate.e_score_correction_bias.copy_(moe.gate.bias)
        hf.experts.gate_up_proj.copy_(torch.stack([torch.cat([e.w1.weight, e.w3.weight]) for e in moe.experts]))
        hf.experts.down_proj.copy_(torch.stack([e.w2.weight for e in moe.experts]))
        for ours, theirs in [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")]:
            getattr(hf.shared_experts, theirs).weight.copy_(getattr(moe.shared_experts, ours).weight)
    return hf


def bench_moe(preset: str = "mini", tokens: int = 8192, device: str = "auto", repeat: int = 10,
              warmup: int = 3) -> dict[str, float]:
    """Print the MoE-layer table; return the fwd+bwd milliseconds by implementation."""
    device = pick_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = ModelConfig.from_preset(preset)
    torch.manual_seed(0)
    moe = MoE(config).to(device, dtype).train()
    x = torch.randn(1, tokens, config.dim, device=device, dtype=dtype)
    upstream = torch.randn_like(x)

    def forward_backward(module: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def step():
            module.zero_grad(set_to_none=True)
            inputs = x.detach().requires_grad_(True)
            out = module(inputs)
            out.backward(upstream)
            return out
        return step

    candidates: dict[str, torch.nn.Module] = {}
    for impl in ("loop", "grouped"):
        ours = MoE(config).to(device, dtype).train()
        ours.load_state_dict(moe.state_dict())
        ours.experts_impl = impl
        candidates[f"ours, {impl}"] = ours
    for experts in ("eager", "grouped_mm"):
        candidates[f"transformers, {experts}"] = hf_moe_like(moe, config, experts).to(device, dtype).train()

    reference = forward_backward(candidates["ours, loop"])().detach()
    results, rows = {}, []
    for name, module in tqdm(candidates.items(), desc="bench moe", leave=False):
        step = forward_backward(module)
        error = relative_error(step().detach(), reference)
        results[name] = time_ms(step, device, warmup, repeat)
        rows.append([name, f"{results[name]:.2f}", error])
    baseline = results["transformers, eager"]
    rows = [[name, ms, f"{baseline / float(ms):.1f}x", f"{error:.1e}"] for name, ms, error in rows]

    grouped_kernel = "torch._grouped_mm" if grouped_mm_supported(x[0], moe.experts[0].w1.weight) else "padded bmm"
    print(environment(device))
    print_table(f"MoE layer forward+backward, preset {preset} ({config.dim} wide, {config.n_routed_experts} experts "
                f"top-{config.n_activated_experts}, {config.n_shared_experts} shared, expert width "
                f"{config.moe_inter_dim}), {tokens} tokens, {str(dtype).removeprefix('torch.')}; "
                f"our grouped path uses {grouped_kernel}",
                ["implementation", "ms", "vs transformers eager", "rel. error vs ours loop"], rows)
    results.update(bench_expert_gemms(moe, x[0], device, warmup, repeat))
    return results


def bench_expert_gemms(moe: MoE, x: torch.Tensor, device: torch.device, warmup: int, repeat: int) -> dict[str, float]:
    """The routed experts alone (SwiGLU, forward+backward) on the rows the gate sends them: TFLOP/s.

    FLOPs = 18 R D F for R routed rows: three R x D x F matmuls, 2 FLOPs per multiply-add,
    once forward and twice backward (input and weight gradients).
    """
    with torch.no_grad():
        _, indices, _ = moe.gate(x)
    order = indices.flatten().argsort(stable=True)
    rows = x[order // indices.size(1)].detach()
    counts = torch.bincount(indices.flatten(), minlength=moe.n_routed_experts)
    upstream = torch.randn_like(rows)
    flops = 18 * rows.size(0) * rows.size(1) * moe.experts[0].w1.out_features

    def loop():
        return torch.cat([expert(chunk) for expert, chunk in zip(moe.experts, rows.split(counts.tolist()))])

    results, table = {}, []
    for name, run in [("loop over experts", loop), ("grouped", lambda: moe.grouped_experts(rows, counts))]:
        def step(run=run):
            moe.zero_grad(set_to_none=True)
            run().backward(upstream)
        ms = time_ms(step, device, warmup, repeat)
        results[f"experts {name}"] = ms
        table.append([name, f"{ms:.2f}", f"{flops / ms / 1e9:.3g}"])
    print_table(f"Routed experts alone, forward+backward: {rows.size(0)} rows (tokens x top-k), "
                f"max/mean rows per expert {(counts.max() / counts.float().mean()).item():.2f}",
                ["experts", "ms", "TFLOP/s"], table)
    return results


# --------------------------------------------------------------------------- bench train
def training_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward), the PaLM / nanoGPT / torchtitan convention:

        6 * N_active + 6 * L * n_heads * (qk_head_dim + v_head_dim) * seq_len

    * 6 N: 2 FLOPs per multiply-add, times 3 (forward, and backward for inputs and weights).
    * N_active: the weights one token multiplies: attention, norms, dense MLPs, the gate, shared
      experts, n_activated_experts of the routed experts, and the output head; not the input
      embedding (a lookup). Each MTP depth adds its block, enorm/hnorm/eh_proj, norm and one more
      head matmul.
    * The attention term counts q k^T and p v for every layer L (MTP blocks included) over the full
      sequence: it is not halved for the causal mask, and flash's backward recomputation is not counted.
    """
    c = config
    expert = size(mlp_tensors(c.dim, c.moe_inter_dim, "expert"))
    moe_block = (size(attention_tensors(c)) + 2 * c.dim + c.n_activated_experts * expert
                 + size(mlp_tensors(c.dim, c.n_shared_experts * c.moe_inter_dim, "shared")) + size(gate_tensors(c)))
    head = c.vocab_size * c.dim
    main = count_parameters(c).activated_without_embedding + (head if c.tie_word_embeddings else 0)
    mtp = c.n_mtp_layers * (2 * c.dim + 2 * c.dim * c.dim + moe_block + c.dim + head)
    attention = 6 * (c.n_layers + c.n_mtp_layers) * c.n_heads * (c.qk_head_dim + c.v_head_dim) * seq_len
    return 6 * (main + mtp) + attention


@dataclass
class TrainResult:
    name: str
    tokens_per_s: float
    flops_per_token: float
    peak_memory_gb: float | None


def bench_train(preset: str = "mini", tokens: int = 16384, seq_len: int = 1024, steps: int = 10, warmup: int = 3,
                device: str = "auto", compile: bool | None = None, mtp_layers: int = 0,
                peak_tflops: float | None = None) -> list[TrainResult]:
    """Print the training-throughput table; return its rows.

    ``tokens`` per step = batch x ``seq_len``. ``mtp_layers`` sets D for our model (transformers has
    no MTP, so the default 0 keeps the two architectures identical). ``compile`` (default: on CUDA)
    adds the variants with every decoder layer compiled (``torch.compile``, as torchtitan does).
    """
    device = pick_device(device)
    compile = device.type == "cuda" if compile is None else compile
    if peak_tflops is None and device.type == "cuda":
        peak_tflops = H100_BF16_PEAK_FLOPS / 1e12
    if tokens % seq_len:
        raise ValueError(f"--tokens ({tokens}) must be a multiple of --seq ({seq_len})")
    config = ModelConfig.from_preset(preset, n_mtp_layers=mtp_layers)
    if seq_len > config.max_seq_len:
        raise ValueError(f"--seq {seq_len} exceeds the preset's max_seq_len {config.max_seq_len}")
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, config.vocab_size, (tokens // seq_len, seq_len + 1), generator=generator).to(device)

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
        results.append(TrainResult(name, tokens / ms * 1e3, training_flops_per_token(variant_config, seq_len), peak))
        del model, step

    print(environment(device))
    baseline = next((r.tokens_per_s for r in results if r.name == "transformers: experts eager"), None)
    rows = []
    for r in results:
        achieved = r.tokens_per_s * r.flops_per_token / 1e12
        rows.append([r.name, f"{r.tokens_per_s:,.0f}", f"{achieved:.3g}",
                     f"{100 * achieved / peak_tflops:.2f}" if peak_tflops else "-",
                     f"{r.peak_memory_gb:.2f}" if r.peak_memory_gb is not None else "-",
                     f"{r.tokens_per_s / baseline:.1f}x" if baseline else "-"])
    weights = "bf16 weights, bf16 autocast" if device.type == "cuda" else "fp32"
    peak_note = f"MFU against {peak_tflops:g} TFLOP/s" if peak_tflops else "MFU: no peak given (--peak-tflops)"
    print_table(f"Training step (forward, backward, AdamW; ours also updates the gate biases), preset {preset} "
                f"(MTP depth {mtp_layers} for ours), {tokens // seq_len} x {seq_len} tokens, {weights}; "
                f"{peak_note}; FLOPs/token = 6 N_active + attention term",
                ["model", "tokens/s", "TFLOP/s", "MFU %", "peak GB", "vs transformers eager"], rows)
    return results


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
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_expert_biases(model)
    return model, step


def hf_step(config: ModelConfig, batch: torch.Tensor, device: torch.device, experts: str,
            compiled: bool = False) -> tuple[torch.nn.Module, Callable[[], None]]:
    """transformers' DeepseekV3ForCausalLM with the named experts backend, its AdamW, and one training step."""
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
