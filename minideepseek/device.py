"""Where the model runs, and with which precision: one policy for every command.

* ``resolve_device("auto")`` picks a CUDA GPU when one is visible, else Apple's GPU (MPS), else the
  CPU; an explicit device that this machine lacks is an error that says so, never a silent fallback.
* ``autocast_dtype(device)`` is the precision policy, and ``autocast(device)`` applies it:

      device   matrix products                       weights, gradients, optimizer
      cuda     bf16 (autocast), if the GPU has bf16   fp32
      mps      bf16 (autocast), torch >= 2.6 on macOS 14+ (M1/M2 emulate bf16: no faster, same numbers)
      cpu      fp32: bf16 matrix products are several times slower than fp32 on most CPUs

  ``inference_dtype(device)`` is the dtype a model is *stored* in for generation: the same 16-bit
  type where autocast uses one, else fp32.
* ``synchronize(device)``: wait for the GPU's queued kernels, so that a timer measures them;
  nothing to wait for on the CPU.
* ``peak_memory(device)``: the most memory this process has held on the device (the resident set on the CPU).
* ``deterministic_kernels(device)``: bit-reproducible training on the CPU, for exact resumption.

Every CUDA- or MPS-only call of the package goes through these functions, so a new device needs
changes here only.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from .validation import UserError


class DeviceError(UserError):
    """A device that this machine cannot provide. The message names it and says what to use instead."""


DEVICES = ("auto", "cpu", "cuda", "mps")  # what --device accepts (also "cuda:N")


def mps_available() -> bool:
    """Whether Apple's Metal GPU backend can run here (Apple Silicon, macOS 12.3+, an MPS build)."""
    return torch.backends.mps.is_available()


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda, else mps, else cpu, whichever this machine has first; an explicit device that
    it lacks is an error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but torch.cuda.is_available() is False "
                          "(a CPU-only PyTorch, or no visible GPU); use --device cpu")
    if name.startswith("mps") and not mps_available():
        raise DeviceError(f"device {name!r} requested but torch.backends.mps.is_available() is False "
                          "(MPS needs Apple Silicon and macOS 12.3 or newer); use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {name!r}; use one of {', '.join(DEVICES)} (or cuda:N)")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The 16-bit type autocast runs the matrix products in on ``device``, or None for fp32 (table above)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "mps":
        new_torch = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 6)
        return torch.bfloat16 if new_torch and torch.backends.mps.is_macos_or_newer(14, 0) else None
    return None


def inference_dtype(device: torch.device) -> torch.dtype:
    """The dtype to store a model in for generation on ``device``."""
    return autocast_dtype(device) or torch.float32


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``autocast_dtype(device)``; nothing where that is fp32."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Block until ``device`` has finished its queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_memory(device: torch.device) -> int:
    """Bytes: the peak allocated by tensors on a CUDA GPU (``reset_peak_memory`` restarts it); on MPS the
    memory the Metal driver holds now (MPS keeps no peak); on the CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if device.type == "mps":
        return torch.mps.driver_allocated_memory()
    try:
        # Linux: VmHWM, the peak of this address space. ru_maxrss would not do: a process started by a
        # large one (a test runner, a notebook kernel) inherits its parent's peak across fork and exec.
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    except (OSError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def reset_peak_memory(device: torch.device) -> None:
    """Restart ``peak_memory``'s count on a CUDA GPU (the CPU's peak resident set cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On CPU, run deterministic kernels for the duration of the block (a few percent slower).

    With several threads, scatter-adds such as the backward of the MoE's token gather sum in a
    varying order; the gradients then differ by rounding noise from run to run, and a resumed run
    would drift away from the original. On CUDA the fast kernels stay: a resumed run there follows
    the same curve up to that noise.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(previous or device.type == "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
