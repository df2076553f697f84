"""``minideepseek bench load``: load DeepSeek-V3 layers at their real width from published-format files.

The published checkpoint cannot be downloaded here, so this benchmark writes one in the same
format: the hub layout, FP8 weights with their real 128x128 scale shapes, for the first
``layers`` layers of the 671B architecture (default 4: the 3 dense layers and one MoE layer,
~15B parameters, ~17 GB of files). It then

1. loads them with ``load_pretrained`` (meta-device model, FP8 dequantised tensor by tensor),
2. reads every tensor of the files once more (the baseline: bytes to the device, nothing built),
3. runs one forward pass,

and reports the load time against the baseline read, the peak memory against the loaded model's
own size, and the forward time. ``shrink=N`` divides the widths by N so it runs on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import re
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors import safe_open

from . import BenchError, check_at_least, environment
from ..checkpoint import _write_checkpoint, load_pretrained
from ..checkpoint_names import BLOCK, FP32, LINEAR, model_layout
from ..config import ModelConfig
from ..device import resolve_device, synchronize

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def real_width_config(n_layers: int = 4, shrink: int = 1) -> ModelConfig:
    """The 671B architecture cut to its first ``n_layers`` layers (no MTP), every width divided by ``shrink``."""
    v3 = ModelConfig.from_preset("v3-671b")
    layers = {"n_layers": n_layers, "n_dense_layers": min(n_layers, v3.n_dense_layers), "n_mtp_layers": 0}
    if shrink == 1:
        return dataclasses.replace(v3, **layers)
    return dataclasses.replace(
        v3, **layers, vocab_size=v3.vocab_size // shrink, dim=v3.dim // shrink,
        inter_dim=v3.inter_dim // shrink, moe_inter_dim=v3.moe_inter_dim // shrink,
        n_heads=max(1, v3.n_heads // shrink), q_lora_rank=v3.q_lora_rank // shrink,
        kv_lora_rank=max(16, v3.kv_lora_rank // shrink), n_routed_experts=max(16, v3.n_routed_experts // shrink),
    )


class RandomFP8Weights:
    """A source of random weights in the release's representation, tensor by tensor (``Checkpoint.get``'s protocol).

    Projections: float8_e4m3fn codes with std ~64 and a constant block scale, so W has std ~0.02;
    norms: ones; embedding, head, router: N(0, 0.02); correction bias: N(0, 0.01) in float32.
    """

    def __init__(self, config: ModelConfig, device: torch.device):
        self.config, self.device, self.fp8 = config, device, True
        self.layout = model_layout(config)

    def get(self, ours: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        spec = self.layout[ours]
        if spec.role == LINEAR:
            codes = (torch.randn(spec.shape, device=self.device) * 64).clamp(-448, 448).to(torch.float8_e4m3fn)
            scale_shape = tuple(math.ceil(size / BLOCK) for size in spec.shape)
            return codes, torch.full(scale_shape, 0.02 / 64, device=self.device)
        if spec.role == FP32:
            return torch.randn(spec.shape, device=self.device) * 0.01, None
        if len(spec.shape) == 1:
            return torch.ones(spec.shape, device=self.device, dtype=torch.bfloat16), None
        return (torch.randn(spec.shape, device=self.device) * 0.02).to(torch.bfloat16), None


class PeakHostMemory:
    """Peak anonymous resident memory (heap, not the page cache of memory-mapped files) while active.

    Samples ``RssAnon`` from /proc/self/status every few milliseconds (Linux); ``peak`` is in bytes.
    """

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def current() -> int:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return 0
        match = re.search(r"RssAnon:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakHostMemory":
        self.start = self.current()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def write_random_checkpoint(config: ModelConfig, path: Path, device: str) -> None:
    """The hub-format FP8 checkpoint of ``RandomFP8Weights``, in 5 GB shards."""
    _write_checkpoint(RandomFP8Weights(config, torch.device(device)), path, "hf", 5 * 10**9, True, 1,
                      torch.bfloat16, progress=True)


def measure(n_layers: int = 4, shrink: int = 1, device: str | torch.device = "auto", dtype: str = "bf16",
            seq_len: int = 512, directory: str | Path | None = None) -> dict[str, float | int | str]:
    """Write, read, load and run; return the numbers of the report (``report`` formats them)."""
    device = resolve_device(device)
    config = real_width_config(n_layers, shrink)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp)
        start = time.perf_counter()
        # In a child process, so that this process's heap holds nothing but what loading allocates.
        writer = multiprocessing.get_context("spawn").Process(target=write_random_checkpoint,
                                                              args=(config, path, str(device)))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise RuntimeError(f"writing the checkpoint failed (exit code {writer.exitcode})")
        write_s = time.perf_counter() - start
        files = sorted(path.glob("*.safetensors"))
        file_bytes = sum(f.stat().st_size for f in files)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with PeakHostMemory() as host:
            start = time.perf_counter()
            model = load_pretrained(path, dtype=DTYPES[dtype], device=device, progress=True)
            synchronize(device)
            load_s = time.perf_counter() - start

        start = time.perf_counter()
        for file in files:  # baseline: every tensor read once onto the device, nothing built or converted
            with safe_open(file, framework="pt", device="cpu") as f:
                for name in f.keys():
                    f.get_tensor(name).to(device)
        synchronize(device)
        read_s = time.perf_counter() - start
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else host.peak - host.start

    tokens = torch.randint(0, config.vocab_size, (1, seq_len), device=device)
    with torch.no_grad():
        model(tokens[:, :8])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        model(tokens)
        synchronize(device)
        forward_s = time.perf_counter() - start

    return {"layers": n_layers, "dense_layers": config.n_dense_layers, "shrink": shrink,
            "dim": config.dim, "device": str(device), "dtype": dtype, "seq_len": seq_len,
            "parameters": sum(p.numel() for p in model.parameters()), "files": len(files),
            "file_gb": file_bytes / 1e9, "write_s": write_s, "read_s": read_s, "load_s": load_s,
            "load_over_read": load_s / read_s, "model_gb": model_bytes / 1e9, "peak_gb": peak / 1e9,
            "peak_over_model": peak / model_bytes, "forward_s": forward_s, "tokens_per_s": seq_len / forward_s}


def report(r: dict[str, float | int | str]) -> str:
    """The lines of ``minideepseek bench load`` from the numbers of ``measure``."""
    where = ("GPU memory allocated" if r["device"].startswith("cuda")
             else "host anonymous memory (RssAnon) above start")
    return "\n".join([
        f"DeepSeek-V3 first {r['layers']} layers ({r['dense_layers']} dense + {r['layers'] - r['dense_layers']} MoE), "
        f"widths / {r['shrink']}, dim {r['dim']}, {r['parameters'] / 1e9:.2f}B parameters, on {r['device']}, "
        f"loaded as {r['dtype']}",
        f"  checkpoint (hub format, FP8) {r['file_gb']:8.2f} GB in {r['files']} files, written in {r['write_s']:.1f} s",
        f"  baseline: read every tensor  {r['read_s']:8.2f} s",
        f"  load_pretrained              {r['load_s']:8.2f} s  ({r['load_over_read']:.2f} x the baseline read)",
        f"  model in memory              {r['model_gb']:8.2f} GB",
        f"  peak {where}: {r['peak_gb']:.2f} GB ({r['peak_over_model']:.2f} x the model)",
        f"  forward, {r['seq_len']} tokens         {r['forward_s']:8.3f} s  ({r['tokens_per_s']:,.0f} tokens/s)",
    ])


def run(device: str = "auto", *, quick: bool = False, layers: int = 4, shrink: int | None = None,
        dtype: str = "bf16", seq: int | None = None, directory: str | Path | None = None) -> str:
    """The report of ``minideepseek bench load``.

    ``layers``: the first layers of the 671B model (3 dense, then MoE); ``shrink``: divide every width by
    this (default 1; ``quick``: 32); ``dtype``: "bf16" or "fp32", of the loaded model; ``seq``: tokens in
    the timed forward pass (default 512; ``quick``: 16); ``directory``: where the temporary checkpoint
    is written (default: the system's temporary directory).
    """
    shrink = shrink if shrink is not None else (32 if quick else 1)
    seq = seq if seq is not None else (16 if quick else 512)
    check_at_least(1, layers=layers, shrink=shrink, seq=seq)
    if dtype not in DTYPES:
        raise BenchError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if directory is not None and not Path(directory).is_dir():
        raise BenchError(f"--dir {directory}: no such directory")
    resolved = resolve_device(device)  # a bad device fails here, before minutes of writing
    return "\n\n".join([environment(resolved, transformers=False),
                        report(measure(layers, shrink, resolved, dtype, seq, directory))])
