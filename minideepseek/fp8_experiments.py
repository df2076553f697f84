"""Chapter 10's experiments (FP8 training): the data, the runs and the measurements behind its
notebook, its figures (``plots/fp8.py``) and ``minideepseek bench fp8``, which prints them as tables.

* **Training loss, FP8 vs BF16** (``train_bytes``): the same model, data and seed, once with BF16
  autocast and once with every eligible linear in FP8 (and the rest under the same autocast);
  ``relative_loss_gap`` compares the two the way the V3 report does.
* **Quantisation error by granularity** on real activations (``granularity_errors``): the inputs
  of every linear layer of a briefly trained ``tiny`` model (``trained_tiny_activations``, forward
  hooks), quantised per tensor, per row, in 1x128 tiles and in 128x128 blocks, without and with
  injected outlier channels.
* **Accumulation** (``accumulation_errors``): a 14-bit accumulator over long K against promotion
  to FP32 every 128 elements.
* **Weight memory** (``weight_bytes``) of a model stored in BF16 and in the checkpoint's FP8 format.

Data: the bytes of the Python standard library's own source (vocabulary 256, ``stdlib_bytes``),
so nothing is downloaded and every run sees the same text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from .config import ModelConfig
from .data import stdlib_dir
from .fp8 import GRANULARITIES, quantize
from .fp8_gemm import limited_accumulator_matmul
from .fp8_linear import FP8Linear, to_fp8
from .losses import compute_loss
from .model import Transformer
from .optim import optimizer_step
from .plots import quick as quick_mode

BYTE_VOCAB = 256


# --------------------------------------------------------------------------- data and the training run
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
            optimizer_step(model, optimizer, grad_clip=1.0, loss=out.loss.detach())  # NaN check, clip, AdamW, biases
            losses.append(out.main.item())
    return TrainRun(precision, losses, model)
# --8<-- [end:train]


def relative_loss_gap(bf16: list[float], fp8: list[float], last: int = 10) -> float:
    """(FP8 - BF16) / BF16 of the mean loss over the ``last`` steps (the report's "relative loss error")."""
    reference = sum(bf16[-last:]) / len(bf16[-last:])
    return (sum(fp8[-last:]) / len(fp8[-last:]) - reference) / reference


# --------------------------------------------------------------------------- error by granularity
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


# --------------------------------------------------------------------------- accumulation
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


# --------------------------------------------------------------------------- weight memory
def weight_bytes(preset: str, fp8: bool) -> int:
    """Bytes of every tensor of ``preset``'s model (built on the meta device): all BF16, or with the
    eligible linears stored in FP8 with float32 128x128 scales (the gate bias stays float32 in both)."""
    with torch.device("meta"):
        model = Transformer(ModelConfig.from_preset(preset)).to(torch.bfloat16)
    if fp8:
        to_fp8(model, backend="simulated", fp8_weights=True)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
