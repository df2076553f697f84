"""The FP8 chapter's experiments: ``minideepseek bench fp8`` prints them, the notebook plots them.

1. **Quantisation error by granularity** on real activations: the inputs of every linear
   layer of a briefly trained ``tiny`` model (forward hooks), quantised per tensor, per
   row, in 1x128 tiles and in 128x128 blocks, without and with injected outlier channels.
2. **Accumulation**: a 14-bit accumulator over long K against promotion every 128 elements.
3. **Training loss, FP8 vs BF16**: the same model, data and seed, once with BF16 autocast
   and once with every eligible linear in FP8 (and the rest under the same autocast).
   ``tiny`` on a CPU (simulated FP8), ``mini`` on an FP8 GPU (``torch._scaled_mm``).
4. **Weight memory** of a model stored in BF16 and in the checkpoint's FP8 format.
5. **GEMM throughput** (GPU only): BF16 against FP8 tensorwise, rowwise and 1x128/128x128
   blockwise at 8192^3 and the ``mini`` shapes, for the bare product and for the whole layer
   with its activation quantisation (eager and ``torch.compile``).

Data: the bytes of the Python standard library's own source (vocabulary 256), so nothing
is downloaded and every run sees the same text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from .balancing import update_expert_biases
from .bench import pick_device, print_table, time_ms
from .plots import quick as quick_mode
from .config import ModelConfig
from .data import stdlib_dir
from .fp8 import GRANULARITIES, quantize
from .fp8_gemm import (_blockwise_scaled_mm, blockwise_scaled_mm_works, fp8_hardware_available,
                       limited_accumulator_matmul, scaled_mm)
from .fp8_linear import FP8Linear, to_fp8
from .losses import compute_loss
from .model import Transformer
from .params import count_parameters

BYTE_VOCAB = 256


# --------------------------------------------------------------------------- data and training
def stdlib_bytes(n_bytes: int) -> torch.Tensor:
    """The first ``n_bytes`` bytes of the standard library's top-level ``.py`` files, sorted by name.

    -> (n_bytes,) int64 token ids in [0, 256).
    """
    chunks, total = [], 0
    for path in sorted(stdlib_dir().glob("*.py")):
        chunk = path.read_bytes()
        chunks.append(chunk)
        total += len(chunk)
        if total >= n_bytes:
            break
    data = b"".join(chunks)[:n_bytes]
    if len(data) < n_bytes:
        raise ValueError(f"the standard library at {stdlib_dir()} holds only {len(data)} bytes of top-level "
                         f"source, fewer than the {n_bytes} asked for")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def random_windows(data: torch.Tensor, batch_size: int, seq_len: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless (batch_size, seq_len + 1) windows of ``data`` at seeded random offsets."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
        yield torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])


def byte_model_config(preset: str, **overrides) -> ModelConfig:
    """A preset with the 256-byte vocabulary and no MTP module (the comparison is about the linears)."""
    return ModelConfig.from_preset(preset, vocab_size=BYTE_VOCAB, n_mtp_layers=0, **overrides)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on a CPU while the block runs: tiny's matrices are too small for threads to
    pay, and on a shared CPU (pytest -n 2, other jobs) OpenMP's waiting threads slow it tenfold."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class TrainRun:
    precision: str  # "fp32", "bf16" or "fp8"
    losses: list[float]  # main next-token loss of every step
    model: Transformer


# --8<-- [start:train]
def train_bytes(preset: str = "tiny", precision: str = "bf16", steps: int = 20, batch_size: int = 8,
                seq_len: int = 64, lr: float = 2e-3, seed: int = 0, device: str | torch.device = "cpu",
                backend: str = "auto", recipe: str = "auto", progress: bool = False) -> TrainRun:
    """Train ``preset`` (byte vocabulary) for ``steps`` AdamW steps; ``precision`` "fp32", "bf16" or "fp8".

    "bf16" and "fp8" run under BF16 autocast with fp32 master weights; "fp8" also swaps every eligible
    linear for an ``FP8Linear`` (``to_fp8``), so those two runs differ only in those GEMMs. "fp32" runs
    without autocast: the reference for how much BF16 itself moves the loss. Same seed: same initial
    weights, same batches.
    """
    if precision not in ("fp32", "bf16", "fp8"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp8', got {precision!r}")
    device = torch.device(device)
    torch.manual_seed(seed)
    model = Transformer(byte_model_config(preset)).to(device)
    if precision == "fp8":
        to_fp8(model, backend=backend, recipe=recipe)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    batches = random_windows(stdlib_bytes(1 << 20), batch_size, seq_len, seed)
    losses = []
    with one_cpu_thread(device):
        for _ in tqdm(range(steps), desc=f"train {preset} {precision}", disable=not progress, leave=False):
            batch = next(batches).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "fp32"):
                out = compute_loss(model, batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            update_expert_biases(model)
            losses.append(out.main.item())
    return TrainRun(precision, losses, model)
# --8<-- [end:train]


def relative_loss_gap(bf16: list[float], fp8: list[float], last: int = 10) -> float:
    """(FP8 - BF16) / BF16 of the mean loss over the ``last`` steps (the report's "relative loss error")."""
    reference = sum(bf16[-last:]) / len(bf16[-last:])
    return (sum(fp8[-last:]) / len(fp8[-last:]) - reference) / reference


# --------------------------------------------------------------------------- 1. error by granularity
@torch.no_grad()
def linear_inputs(model: nn.Module, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every linear layer outside the routed experts, one per distinct input.

    tokens: (batch, seq) -> {module name: (tokens, in_features) float32}. Layers that read the same
    tensor (wq_a and wkv_a, w1 and w3) are reported once, under the first name.
    """
    captured: dict[str, torch.Tensor] = {}
    seen: list[torch.Tensor] = []  # the inputs themselves: ids of freed tensors get reused
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, FP8Linear)) and ".experts." not in name and name != "head":
            def hook(module, args, output, name=name):
                if not any(args[0] is x for x in seen):
                    seen.append(args[0])
                    captured[name] = args[0].detach().reshape(-1, args[0].size(-1)).float().cpu()
            hooks.append(module.register_forward_hook(hook))
    try:
        model.eval()
        model(tokens)
    finally:
        for handle in hooks:
            handle.remove()
    return captured


def inject_outlier_channels(x: torch.Tensor, factor: float, n_channels: int = 2,
                            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiply ``n_channels`` random channels of x (tokens, K) by ``factor`` ("massive activations").

    -> (x with outliers, ordinary: bool (K,) mask of the untouched channels)
    """
    channels = torch.randperm(x.size(1), generator=torch.Generator().manual_seed(seed))[:n_channels]
    ordinary = torch.ones(x.size(1), dtype=torch.bool)
    ordinary[channels] = False
    out = x.clone()
    out[:, channels] *= factor
    return out, ordinary


def quantization_error(x: torch.Tensor, granularity: str, ordinary: torch.Tensor | None = None,
                       dtype: torch.dtype = torch.float8_e4m3fn, scale_fmt: str | None = None) -> float:
    """Relative RMS error ||Q(x) - x|| / ||x|| of quantising x (tokens, K) at ``granularity``,
    over the ``ordinary`` channels only when given (an outlier's own error would hide the others')."""
    error = quantize(x, GRANULARITIES[granularity], dtype, scale_fmt).dequantize() - x
    if ordinary is not None:
        error, x = error[:, ordinary], x[:, ordinary]
    return (error.norm() / x.norm()).item()


def granularity_errors(activations: dict[str, torch.Tensor], outlier_factors: tuple[float, ...] = (1.0, 1e3, 1e4),
                       ) -> dict[float, dict[str, dict[str, float]]]:
    """{outlier factor: {layer: {granularity: relative error on ordinary channels}}}; factor 1 = none."""
    table: dict[float, dict[str, dict[str, float]]] = {}
    with one_cpu_thread(torch.device("cpu")):
        for factor in outlier_factors:
            table[factor] = {}
            for layer, x in activations.items():
                x_out, ordinary = inject_outlier_channels(x, factor) if factor != 1 else (x, None)
                table[factor][layer] = {g: quantization_error(x_out, g, ordinary) for g in GRANULARITIES}
    return table


def trained_tiny_activations(steps: int | None = None, seed: int = 0,
                             progress: bool = False) -> dict[str, torch.Tensor]:
    """Train ``tiny`` briefly in BF16 and capture its linear inputs on a fresh batch of 8 x 128 bytes."""
    steps = steps if steps is not None else (10 if quick_mode() else 200)
    run = train_bytes("tiny", "bf16", steps=steps, seed=seed, progress=progress)
    tokens = next(random_windows(stdlib_bytes(1 << 20), 8, 128, seed + 1))[:, :-1]
    return linear_inputs(run.model, tokens)


# --------------------------------------------------------------------------- 2. accumulation
def accumulation_errors(ks: tuple[int, ...] = (128, 512, 1024, 2048, 4096, 8192), size: int = 32,
                        accumulator_bits: int = 14, seed: int = 0) -> dict[int, tuple[float, float]]:
    """{K: (relative error without promotion, with promotion every 128)} for E4M3 Gaussian operands."""
    generator = torch.Generator().manual_seed(seed)
    results = {}
    with one_cpu_thread(torch.device("cpu")):
        for k in ks:
            a = torch.randn(size, k, generator=generator).to(torch.float8_e4m3fn).double()
            b = torch.randn(size, k, generator=generator).to(torch.float8_e4m3fn).double()
            exact = a @ b.T
            errors = [(limited_accumulator_matmul(a, b, accumulator_bits, promote) - exact).norm() / exact.norm()
                      for promote in (None, 128)]
            results[k] = (errors[0].item(), errors[1].item())
    return results


# --------------------------------------------------------------------------- 4. memory
def weight_bytes(preset: str, fp8: bool) -> int:
    """Bytes of every tensor of ``preset``'s model (built on the meta device): all BF16, or with the
    eligible linears stored in FP8 with float32 128x128 scales (the gate bias stays float32 in both)."""
    with torch.device("meta"):
        model = Transformer(ModelConfig.from_preset(preset)).to(torch.bfloat16)
    if fp8:
        to_fp8(model, backend="simulated", fp8_weights=True)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def memory_table(presets: tuple[str, ...] = ("tiny", "mini", "v3-671b")) -> list[list[str]]:
    rows = []
    for preset in presets:
        if preset == "v3-671b":  # 46k modules even on the meta device: use the analytic count
            count = count_parameters(ModelConfig.from_preset(preset))
            bf16, fp8, how = count.bytes_bf16, count.bytes_fp8, "params.count_parameters"
        else:
            bf16, fp8, how = weight_bytes(preset, False), weight_bytes(preset, True), "state_dict bytes"
        rows.append([preset, f"{bf16 / 2**20:,.1f} MiB", f"{fp8 / 2**20:,.1f} MiB", f"{fp8 / bf16:.3f}", how])
    return rows


# --------------------------------------------------------------------------- 5. GEMM throughput (GPU)
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


# --------------------------------------------------------------------------- the command
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


def bench_fp8(device: str = "auto", steps: int | None = None, quick: bool = False) -> None:
    """Run every experiment of the FP8 chapter that this device can and print the tables."""
    device = pick_device(device)
    quick = quick or quick_mode()
    on_gpu = fp8_hardware_available(device)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'} | "
          f"torch {torch.__version__} | FP8 tensor cores: {'yes' if on_gpu else 'no (simulated FP8)'}")

    errors = granularity_errors(trained_tiny_activations(steps=10 if quick else 200, progress=True))
    print_table("1. E4M3 quantisation error (relative RMS, ordinary channels) of tiny's linear inputs, "
                "by outlier channels injected and granularity",
                ["outliers", "layer", *GRANULARITIES], format_granularity_table(errors))

    ks = (128, 1024, 4096) if quick else (128, 512, 1024, 2048, 4096, 8192, 16384)
    print_table("2. Accumulating K E4M3 products with a 14-bit accumulator (relative error)",
                ["K", "no promotion", "promotion every 128"],
                [[str(k), f"{a:.2e}", f"{b:.2e}"] for k, (a, b) in accumulation_errors(ks).items()])

    preset = "mini" if on_gpu else "tiny"
    steps = steps if steps is not None else (20 if quick else (200 if on_gpu else 300))
    shape = {"batch_size": 16, "seq_len": 512, "lr": 1e-3} if on_gpu else {"batch_size": 8, "seq_len": 64, "lr": 2e-3}
    precisions = ("bf16", "fp8") if on_gpu else ("fp32", "bf16", "fp8")  # FP32 as a reference where it is cheap
    runs = {p: train_bytes(preset, p, steps=steps, device=device, progress=True, **shape) for p in precisions}
    last = max(1, min(50, steps // 5))
    print_table(f"3. Training loss, {preset}, {steps} steps, bytes of the stdlib, same weights and batches "
                f"({'FP8 on tensor cores' if on_gpu else 'FP8 simulated on the CPU'})",
                ["precision", "first loss", f"final loss (mean of last {last})", "relative to BF16"],
                [[p, f"{r.losses[0]:.4f}", f"{sum(r.losses[-last:]) / last:.4f}",
                  f"{100 * relative_loss_gap(runs['bf16'].losses, r.losses, last):+.2f}%"] for p, r in runs.items()])

    print_table("4. Weight memory: everything in BF16 vs eligible linears in FP8 + 128x128 float32 scales",
                ["preset", "BF16", "FP8", "ratio", "measured as"], memory_table())

    if on_gpu:
        shapes = [("square", 8192, 8192, 8192)] + ([] if quick else mini_gemm_shapes())
        print_table("5. GEMM throughput (TFLOP/s; ratio to BF16 on the same shape)",
                    ["shape", "MxNxK", "path", "ms", "TFLOP/s", "vs BF16"], gemm_throughput(device, shapes))
    else:
        print_table("5. CPU: cost of the FP8 simulation (not an FP8 speed; FP8 throughput needs a GPU)",
                    ["layer", "shape", "ms"], simulated_linear_cost(device))
