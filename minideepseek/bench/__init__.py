"""Benchmarks that print tables: ``minideepseek bench moe|train|load|generate|fp8``.

Every figure is measured in one process, against baselines run on the same device with the
same config and inputs, so the *ratios* survive hardware and library changes. One module per
benchmark:

    bench/moe.py        one MoE layer forward + backward, ours against transformers' DeepseekV3MoE
    bench/train.py      whole training steps: tokens/s, TFLOP/s, MFU, peak memory, ours against transformers
    bench/load.py       load_pretrained on real-width V3 layers written as published FP8 files
    bench/generate.py   MLA's latent cache against the per-head one; generation against transformers
    bench/fp8.py        chapter 10's experiments (``fp8_experiments``) as tables; FP8 GEMM throughput

Each module has the same entry point,

    run(device: str = "auto", *, quick: bool = False, **options) -> str

which measures and returns the report: a line naming the machine and the library versions,
then the tables. ``quick`` shrinks the sizes for a short run on a CPU; the options are the
command's flags (``--tokens`` is ``tokens=``) and override it. Bad input (a size
of 0, a CUDA device on a machine without one) raises a ``UserError`` (``BenchError``, ``DeviceError``)
whose message is one line.

This module holds what they share: the table formatter, the timer, the relative error, the
environment line, and transformers' config of our architecture. transformers, the baseline, is
slow to import: it is imported inside the functions that build its models, never here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import statistics
import time
from collections.abc import Callable

import torch

from ..config import ModelConfig
from ..device import synchronize
from ..validation import UserError, is_integer


class BenchError(UserError):
    """A benchmark option that cannot work (a size of 0, a missing baseline); the message names the flag."""


def format_table(header: list[str], rows: list[list], title: str | None = None) -> str:
    """A plain-text table: the first column left-aligned, the others (numbers) right-aligned;
    ``title`` on the line above."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).rjust(w) if j else str(cell).ljust(w) for j, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if title is not None:
        lines.insert(0, title)
    return "\n".join(lines)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print ``format_table`` after a blank line (for notebooks and scripts)."""
    print(f"\n{format_table(header, rows, title)}")


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


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float32."""
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def environment(device: torch.device, transformers: bool = True) -> str:
    """One line naming what the numbers were measured on (and transformers' version, for the baselines)."""
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    line = f"device: {where} | torch {torch.__version__}"
    if transformers:
        try:  # the installed version, without importing the library
            line += f" | transformers {importlib.metadata.version('transformers')}"
        except importlib.metadata.PackageNotFoundError:
            line += " | transformers not installed"
    return line


def check_at_least(minimum: int, **values: int | None) -> None:
    """Raise a one-line BenchError naming the first value (a command-line flag) that is not an integer
    >= ``minimum``; None (not given) is not checked."""
    for name, value in values.items():
        if value is not None and (not is_integer(value) or value < minimum):
            raise BenchError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")


def require_transformers() -> None:
    """The baselines are transformers' models: say how to install it rather than fail on an import."""
    if importlib.util.find_spec("transformers") is None:
        raise BenchError("the baseline needs transformers: pip install 'transformers>=5.0' "
                         "(or pip install -e '.[dev]')")


def hf_config(config: ModelConfig, experts: str):
    """transformers' DeepseekV3Config of the same architecture, with its experts backend named
    ("eager": a loop over the experts; "grouped_mm": grouped GEMMs)."""
    import transformers

    transformers.logging.set_verbosity_error()
    hf = transformers.DeepseekV3Config(**config.to_hf_dict())
    hf._experts_implementation = experts
    return hf
