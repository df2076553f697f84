"""``minideepseek bench moe``: one MoE layer, forward + backward, ours against transformers.

Our readable loop and our grouped path against transformers' ``DeepseekV3MoE`` with its
``eager`` and ``grouped_mm`` experts backends, all holding the same weights and fed the same
tokens; then the routed experts alone (the grouped expert GEMMs) in TFLOP/s. On CUDA the
weights are bf16; on a CPU everything is fp32 (CPU bf16 matrix products are several times
slower than fp32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from . import check_at_least, environment, format_table, hf_config, relative_error, require_transformers, time_ms
from ..config import ModelConfig
from ..device import resolve_device
from ..moe import MoE, grouped_mm_supported


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


def layer_table(moe: MoE, config: ModelConfig, preset: str, x: torch.Tensor, device: torch.device, warmup: int,
                repeat: int) -> str:
    """ms of forward + backward of the layer: ours (loop, grouped) and transformers' (eager, grouped_mm)."""
    upstream = torch.randn_like(x)

    def forward_backward(module: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def step():
            module.zero_grad(set_to_none=True)
            out = module(x.detach().requires_grad_(True))
            out.backward(upstream)
            return out
        return step

    candidates: dict[str, torch.nn.Module] = {}
    for impl in ("loop", "grouped"):
        ours = MoE(config).to(device, x.dtype).train()
        ours.load_state_dict(moe.state_dict())
        ours.experts_impl = impl
        candidates[f"ours, {impl}"] = ours
    for experts in ("eager", "grouped_mm"):
        candidates[f"transformers, {experts}"] = hf_moe_like(moe, config, experts).to(device, x.dtype).train()

    reference = forward_backward(candidates["ours, loop"])().detach()
    ms, errors = {}, {}
    for name, module in tqdm(candidates.items(), desc="bench moe", leave=False):
        step = forward_backward(module)
        errors[name] = relative_error(step().detach(), reference)
        ms[name] = time_ms(step, device, warmup, repeat)
    baseline = ms["transformers, eager"]
    rows = [[name, f"{ms[name]:.2f}", f"{baseline / ms[name]:.1f}x", f"{errors[name]:.1e}"] for name in candidates]
    grouped_kernel = "torch._grouped_mm" if grouped_mm_supported(x[0], moe.experts[0].w1.weight) else "padded bmm"
    title = (f"MoE layer forward+backward, preset {preset} ({config.dim} wide, {config.n_routed_experts} experts "
             f"top-{config.n_activated_experts}, {config.n_shared_experts} shared, expert width "
             f"{config.moe_inter_dim}), {x.size(1)} tokens, {str(x.dtype).removeprefix('torch.')}; "
             f"our grouped path uses {grouped_kernel}")
    return format_table(["implementation", "ms", "vs transformers eager", "rel. error vs ours loop"], rows, title)


def expert_gemms_table(moe: MoE, x: torch.Tensor, device: torch.device, warmup: int, repeat: int) -> str:
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

    table = []
    for name, experts in [("loop over experts", loop), ("grouped", lambda: moe.grouped_experts(rows, counts))]:
        def step(experts=experts):
            moe.zero_grad(set_to_none=True)
            experts().backward(upstream)
        ms = time_ms(step, device, warmup, repeat)
        table.append([name, f"{ms:.2f}", f"{flops / ms / 1e9:.3g}"])
    return format_table(["experts", "ms", "TFLOP/s"], table,
                        f"Routed experts alone, forward+backward: {rows.size(0)} rows (tokens x top-k), "
                        f"max/mean rows per expert {(counts.max() / counts.float().mean()).item():.2f}")


def run(device: str = "auto", *, quick: bool = False, preset: str = "mini", tokens: int | None = None,
        repeat: int | None = None, warmup: int | None = None) -> str:
    """The report of ``minideepseek bench moe``: the MoE-layer table and the routed-experts table.

    Defaults: 8192 tokens, the median of 10 timed runs after 3 untimed ones; ``quick``: 1024 tokens,
    3 runs after 1.
    """
    tokens = tokens if tokens is not None else (1024 if quick else 8192)
    repeat = repeat if repeat is not None else (3 if quick else 10)
    warmup = warmup if warmup is not None else (1 if quick else 3)
    check_at_least(1, tokens=tokens, repeat=repeat)
    check_at_least(0, warmup=warmup)
    require_transformers()
    device = resolve_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = ModelConfig.from_preset(preset)
    torch.manual_seed(0)
    moe = MoE(config).to(device, dtype).train()
    x = torch.randn(1, tokens, config.dim, device=device, dtype=dtype)
    return "\n\n".join([environment(device), layer_table(moe, config, preset, x, device, warmup, repeat),
                        expert_gemms_table(moe, x[0], device, warmup, repeat)])
