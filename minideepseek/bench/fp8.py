"""``minideepseek bench fp8``: chapter 10's experiments (``fp8_experiments``) as tables, and FP8 GEMM speed.

1. **Quantisation error by granularity** of tiny's linear inputs, without and with outlier channels.
2. **Accumulation**: a 14-bit accumulator over long K against promotion every 128 elements.
3. **Training loss, FP8 vs BF16** (and FP32 on a CPU): ``tiny`` on a CPU (simulated FP8),
   ``mini`` on an FP8 GPU (``torch._scaled_mm``).
4. **Weight memory** of a model stored in BF16 and in the checkpoint's FP8 format.
5. **GEMM throughput** (FP8 GPU only): BF16 against FP8 tensorwise, rowwise and 1x128/128x128
   blockwise at 8192^3 and the ``mini`` shapes, for the bare product and for the whole layer
   with its activation quantisation (eager and ``torch.compile``). On a CPU: what the
   simulation costs instead.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from . import check_at_least, environment, format_table, time_ms
from ..config import ModelConfig
from ..device import resolve_device
from ..fp8 import GRANULARITIES, quantize
from ..fp8_experiments import (accumulation_errors, granularity_errors, relative_loss_gap, train_bytes,
                               trained_tiny_activations, weight_bytes)
from ..fp8_gemm import _blockwise_scaled_mm, blockwise_scaled_mm_works, fp8_hardware_available, scaled_mm
from ..fp8_linear import FP8Linear
from ..params import count_parameters
from ..plots import quick as quick_mode


# --------------------------------------------------------------------------- tables
def format_granularity_table(errors: dict[float, dict[str, dict[str, float]]]) -> list[list[str]]:
    """One row per (outlier factor, layer): the error of each granularity in percent, then the mean."""
    rows = []
    for factor, layers in errors.items():
        label = "none" if factor == 1 else f"x{factor:g}"
        for layer, by_granularity in layers.items():
            rows.append([label, layer, *(f"{100 * e:.2f}%" for e in by_granularity.values())])
        means = [sum(layer[g] for layer in layers.values()) / len(layers) for g in GRANULARITIES]
        rows.append([label, "mean over layers", *(f"{100 * e:.2f}%" for e in means)])
    return rows


def memory_table(presets: tuple[str, ...] = ("tiny", "mini", "v3-671b")) -> list[list[str]]:
    """One row per preset: the weight bytes in BF16 and with FP8 linears, and their ratio."""
    rows = []
    for preset in presets:
        if preset == "v3-671b":  # 46k modules even on the meta device: use the analytic count
            count = count_parameters(ModelConfig.from_preset(preset))
            bf16, fp8, how = count.bytes_bf16, count.bytes_fp8, "params.count_parameters"
        else:
            bf16, fp8, how = weight_bytes(preset, False), weight_bytes(preset, True), "state_dict bytes"
        rows.append([preset, f"{bf16 / 2**20:,.1f} MiB", f"{fp8 / 2**20:,.1f} MiB", f"{fp8 / bf16:.3f}", how])
    return rows


# --------------------------------------------------------------------------- GEMM throughput (GPU)
def mini_gemm_shapes(tokens: int = 8192) -> list[tuple[str, int, int, int]]:
    """(name, M, N, K) of the ``mini`` model's linears for a batch of ``tokens`` tokens."""
    c = ModelConfig.from_preset("mini")
    return [("wq_b", tokens, c.n_heads * c.qk_head_dim, c.q_lora_rank),
            ("wo", tokens, c.dim, c.n_heads * c.v_head_dim),
            ("dense w1", tokens, c.inter_dim, c.dim),
            ("dense w2", tokens, c.dim, c.inter_dim),
            ("expert w1 (1 expert)", tokens * c.n_activated_experts // c.n_routed_experts, c.moe_inter_dim, c.dim)]


def gemm_throughput(device: torch.device, shapes: list[tuple[str, int, int, int]], repeat: int = 20
                    ) -> list[list[str]]:
    """TFLOP/s of each shape (M, N, K): BF16 ``x @ w.T``; FP8 products of pre-quantised operands
    (tensorwise, rowwise, 1x128 / 128x128 blockwise); and whole FP8 layer forwards with their
    quantisation: x quantised on the fly against a stored FP8 weight (inference), and x and W both
    quantised (training), eager and compiled. Needs an FP8 GPU. A path that fails prints "n/a"."""
    blockwise = blockwise_scaled_mm_works(device, (128, 128))

    def block_layer(x, w_q):
        return _blockwise_scaled_mm(quantize(x, (1, 128), amax_eps=1e-4), w_q)

    def block_training(x, w):
        return _blockwise_scaled_mm(quantize(x, (1, 128), amax_eps=1e-4), quantize(w, (128, 128)))

    def row_layer(x, w_q):
        return scaled_mm(quantize(x, (1, None), amax_eps=1e-4), w_q)

    compiled = {f: torch.compile(f) for f in (block_layer, block_training, row_layer)}
    rows = []
    for name, m, n, k in tqdm(shapes, desc="bench fp8 gemm", leave=False):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
        q = {"x row": quantize(x, (1, None)), "w row": quantize(w, (1, None)), "x block": quantize(x, (1, 128)),
             "w block": quantize(w, (128, 128)), "x tensor": quantize(x, (None, None)),
             "w tensor": quantize(w, (None, None))}
        paths = {"bf16 x @ w.T": (torch.matmul, x, w.T),
                 "fp8 tensorwise (bare)": (scaled_mm, q["x tensor"], q["w tensor"]),
                 "fp8 rowwise (bare)": (scaled_mm, q["x row"], q["w row"]),
                 "rowwise layer, compiled": (compiled[row_layer], x, q["w row"])}
        if blockwise:
            paths.update({"fp8 1x128/128x128 (bare)": (_blockwise_scaled_mm, q["x block"], q["w block"]),
                          "blockwise layer, eager": (block_layer, x, q["w block"]),
                          "blockwise layer, compiled": (compiled[block_layer], x, q["w block"]),
                          "blockwise training fwd, compiled": (compiled[block_training], x, w)})
        timings = {}
        for what, (fn, a, b) in paths.items():
            try:
                timings[what] = time_ms(lambda fn=fn, a=a, b=b: fn(a, b), device, 5, repeat)
            except RuntimeError as error:  # a torch/GPU combination without this path: report it, go on
                timings[what] = type(error).__name__
        for what, ms in timings.items():
            if isinstance(ms, str):
                rows.append([name, f"{m}x{n}x{k}", what, "n/a", "n/a", ms])
                continue
            tflops = 2 * m * n * k / ms / 1e9
            rows.append([name, f"{m}x{n}x{k}", what, f"{ms:.3f}", f"{tflops:,.0f}",
                         f"{timings['bf16 x @ w.T'] / ms:.2f}x"])
    if not blockwise:
        rows.append(["(blockwise)", "", f"no working block-scaled _scaled_mm with torch {torch.__version__}",
                     "", "", ""])
    return rows


def simulated_linear_cost(device: torch.device, size: int = 1024, repeat: int = 5) -> list[list[str]]:
    """What the simulation costs (CPU): an FP8Linear forward+backward against nn.Linear's. Not an FP8 speed."""
    linear = nn.Linear(size, size, bias=False, device=device)
    fp8 = FP8Linear.from_linear(nn.Linear(size, size, bias=False, device=device))
    x = torch.randn(size, size, device=device, requires_grad=True)
    rows = []
    for name, module in (("nn.Linear fp32", linear), ("FP8Linear simulated", fp8)):
        ms = time_ms(lambda module=module: module(x).sum().backward(), device, 1, repeat)
        rows.append([name, f"{size}^3 fwd+bwd", f"{ms:.1f}"])
    return rows


# --------------------------------------------------------------------------- the report
def run(device: str = "auto", *, quick: bool = False, steps: int | None = None) -> str:
    """The report of ``minideepseek bench fp8``: every experiment of chapter 10 that this device can run.

    ``steps``: training steps of the loss comparison (default 300 for tiny on a CPU, 200 for mini on
    an FP8 GPU; ``quick``, or ``MINIDEEPSEEK_QUICK=1``: 20, and shorter runs everywhere).
    """
    check_at_least(1, steps=steps)
    device = resolve_device(device)
    quick = quick or quick_mode()
    on_gpu = fp8_hardware_available(device)
    sections = [environment(device, transformers=False)
                + f" | FP8 tensor cores: {'yes' if on_gpu else 'no (simulated FP8)'}"]

    errors = granularity_errors(trained_tiny_activations(steps=10 if quick else 200, progress=True))
    sections.append(format_table(["outliers", "layer", *GRANULARITIES], format_granularity_table(errors),
                                 "1. E4M3 quantisation error (relative RMS, ordinary channels) of tiny's linear "
                                 "inputs, by outlier channels injected and granularity"))

    ks = (128, 1024, 4096) if quick else (128, 512, 1024, 2048, 4096, 8192, 16384)
    sections.append(format_table(["K", "no promotion", "promotion every 128"],
                                 [[str(k), f"{a:.2e}", f"{b:.2e}"] for k, (a, b) in accumulation_errors(ks).items()],
                                 "2. Accumulating K E4M3 products with a 14-bit accumulator (relative error)"))

    preset = "mini" if on_gpu else "tiny"
    steps = steps if steps is not None else (20 if quick else (200 if on_gpu else 300))
    shape = {"batch_size": 16, "seq_len": 512, "lr": 1e-3} if on_gpu else {"batch_size": 8, "seq_len": 64, "lr": 2e-3}
    precisions = ("bf16", "fp8") if on_gpu else ("fp32", "bf16", "fp8")  # FP32 as a reference where it is cheap
    runs = {p: train_bytes(preset, p, steps=steps, device=device, progress=True, **shape) for p in precisions}
    last = max(1, min(50, steps // 5))
    sections.append(format_table(
        ["precision", "first loss", f"final loss (mean of last {last})", "relative to BF16"],
        [[p, f"{r.losses[0]:.4f}", f"{sum(r.losses[-last:]) / last:.4f}",
          f"{100 * relative_loss_gap(runs['bf16'].losses, r.losses, last):+.2f}%"] for p, r in runs.items()],
        f"3. Training loss, {preset}, {steps} steps, bytes of the stdlib, same weights and batches "
        f"({'FP8 on tensor cores' if on_gpu else 'FP8 simulated on the CPU'})"))

    sections.append(format_table(["preset", "BF16", "FP8", "ratio", "measured as"], memory_table(),
                                 "4. Weight memory: everything in BF16 vs eligible linears in FP8 + 128x128 "
                                 "float32 scales"))

    if on_gpu:
        shapes = [("square", 8192, 8192, 8192)] + ([] if quick else mini_gemm_shapes())
        sections.append(format_table(["shape", "MxNxK", "path", "ms", "TFLOP/s", "vs BF16"],
                                     gemm_throughput(device, shapes),
                                     "5. GEMM throughput (TFLOP/s; ratio to BF16 on the same shape)"))
    else:
        sections.append(format_table(["layer", "shape", "ms"], simulated_linear_cost(device),
                                     "5. CPU: cost of the FP8 simulation (not an FP8 speed; FP8 throughput "
                                     "needs a GPU)"))
    return "\n\n".join(sections)
