"""``minideepseek bench all``: every benchmark of the package in one call, into one markdown report.

Runs ``bench moe``, ``train``, ``generate``, ``fp8`` and ``load`` (each module's ``run``, with its own
defaults for the device, or its ``quick`` sizes), then measures the peak memory of real training
steps against ``plan.plan_training``'s prediction, and writes ``OUT/report.md``: the device, the
library versions, each benchmark's tables (as its command prints them) with its wall time, and the
plan-vs-measured table. A benchmark that fails leaves its error in the report; the others still run.

On CUDA the plan is compared with ``torch.cuda.max_memory_allocated`` over three training steps of
``mini`` at two batch sizes, in this process. On the CPU the peak resident set is the only measure
and it cannot be reset, so each size trains in a fresh subprocess (``tiny`` at two batch sizes).
"""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from . import environment, format_table
from ..config import ModelConfig
from ..device import peak_memory, reset_peak_memory, resolve_device, synchronize
from ..plan import plan_training

BENCHMARKS = ("moe", "train", "generate", "fp8", "load")
# With --quick on a CPU, sizes below each command's own --quick, so that the whole report takes
# under three minutes on two cores: the same tables, smaller models and fewer repetitions.
QUICK_CPU_OPTIONS = {"moe": dict(tokens=512, repeat=2, warmup=1), "train": dict(preset="tiny"),
                     "generate": dict(preset="tiny"), "fp8": {}, "load": {}}

# A real training run of CPU_RUN's sizes in a fresh process; prints its peak resident set (bytes).
CPU_RUN = textwrap.dedent("""
    import json, sys, torch
    from minideepseek.bench.all import train_steps
    from minideepseek.device import peak_memory
    torch.set_num_threads(1)
    train_steps(*json.loads(sys.argv[1]))
    print(json.dumps({"peak": peak_memory(torch.device("cpu"))}))
""")


def train_steps(preset: str, overrides: dict, batch: int, seq: int, device: str = "cpu", steps: int = 3) -> None:
    """``steps`` optimizer steps of ``train.train_step`` (the training loop's own step) on random tokens."""
    from ..optim import build_optimizer
    from ..train import TrainConfig, build_model, train_step

    dev = resolve_device(device)
    config = TrainConfig(preset=preset, model_overrides=overrides, device=device, batch_size=batch, seq_len=seq,
                         progress=False)
    model_config = ModelConfig.from_preset(preset, **overrides)
    model = build_model(model_config, config, dev).train()
    optimizer = build_optimizer(model, config, dev)
    generator = torch.Generator().manual_seed(0)
    batches = iter(lambda: torch.randint(model_config.vocab_size, (batch, seq + 1), generator=generator), None)
    for _ in range(steps):
        train_step(model, optimizer, batches, config, dev)
    synchronize(dev)


def plan_vs_measured(device: torch.device, quick: bool) -> str:
    """The table of predicted and measured peak memory of real training steps."""
    if device.type == "cuda":
        preset, overrides, sizes = "mini", {}, [(2, 1024), (8, 1024)] if not quick else [(1, 512), (2, 512)]
    else:
        preset, overrides, sizes = "tiny", {"vocab_size": 512}, [(8, 128), (16, 128)]
    config = ModelConfig.from_preset(preset, **overrides)
    rows = []
    for batch, seq in sizes:
        plan = plan_training(config, batch, seq, device=device.type)
        # the training loop's own runtime floor (tokenizer, plots) is not in these bare steps: measure
        # the tensors against the plan without it on the CPU, as the process floor is measured apart.
        if device.type == "cuda":
            torch.cuda.empty_cache()
            reset_peak_memory(device)
            base = peak_memory(device)
            train_steps(preset, overrides, batch, seq, str(device))
            measured = peak_memory(device) - base
            what = "torch.cuda.max_memory_allocated"
        else:
            result = subprocess.run([sys.executable, "-c", CPU_RUN, json.dumps([preset, overrides, batch, seq])],
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(result.stderr.strip().splitlines()[-1])
            measured = json.loads(result.stdout.strip().splitlines()[-1])["peak"]
            what = "peak resident set (subprocess)"
        rows.append([f"{preset} {batch}x{seq}", f"{plan.peak / 2**20:,.0f}", f"{measured / 2**20:,.0f}",
                     f"{plan.peak / measured:.2f}"])
    note = ("" if device.type == "cuda" else
            "\n\nThe CPU prediction includes the training command's runtime floor (tokenizer library, plots), "
            "which these bare steps do not load: a ratio a little above 1 is expected here.")
    return format_table(["run", "predicted MiB", "measured MiB", "predicted / measured"], rows,
                        f"plan vs measured peak memory ({what})") + note


def versions() -> str:
    import importlib.metadata

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("transformers", "safetensors", "tokenizers"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def run(device: str = "auto", *, quick: bool = False, out: str | Path | None = None,
        benchmarks: tuple[str, ...] = BENCHMARKS) -> str:
    """Run every benchmark on ``device`` and write ``out/report.md`` (default ``bench-report/``); returns
    the report's path and the wall time of each part."""
    dev = resolve_device(device)
    out = Path(out if out is not None else "bench-report")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections, timings = [], []
    for name in benchmarks:
        tick = time.perf_counter()
        try:
            options = QUICK_CPU_OPTIONS.get(name, {}) if quick and dev.type == "cpu" else {}
            text = importlib.import_module(f"{__package__}.{name}").run(str(dev), quick=quick, **options)
        except Exception as error:  # one failing benchmark must not cost the others' figures
            text = f"FAILED: {type(error).__name__}: {error}"
        seconds = time.perf_counter() - tick
        timings.append([name, f"{seconds:.0f}"])
        flags = "".join(f" --{key}={value}" for key, value in options.items()) if quick and dev.type == "cpu" else ""
        command = f"minideepseek bench {name} --device {dev.type}{' --quick' if quick else ''}{flags}"
        sections.append(f"## bench {name}\n\n`{command}` ({seconds:.0f} s)\n\n```text\n{text}\n```\n")
    tick = time.perf_counter()
    try:
        text = plan_vs_measured(dev, quick)
    except Exception as error:
        text = f"FAILED: {type(error).__name__}: {error}"
    seconds = time.perf_counter() - tick
    timings.append(["plan vs measured", f"{seconds:.0f}"])
    sections.append(f"## plan vs measured memory\n\n`minideepseek plan` against real training steps "
                    f"({seconds:.0f} s)\n\n```text\n{text}\n```\n")
    total = time.perf_counter() - started
    timings.append(["total", f"{total:.0f}"])
    header = (f"# minideepseek benchmark report\n\n"
              f"`minideepseek bench all --device {dev.type}{' --quick' if quick else ''}`\n\n"
              f"- {environment(dev)}\n- versions: {versions()}\n- wall time: {total:.0f} s\n\n"
              f"```text\n{format_table(['part', 'seconds'], timings)}\n```\n")
    report = out / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text(header + "\n" + "\n".join(sections))
    tmp.replace(report)
    return f"{report} written in {total:.0f} s\n\n{format_table(['part', 'seconds'], timings)}"
