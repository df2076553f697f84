"""Where the model runs, and with which precision: one policy for every command.

* ``resolve_device("auto")`` picks CUDA when a GPU is visible, else the CPU; an explicit device
  that this machine lacks is an error that says so, never a silent fallback.
* ``autocast(device)``: bf16 autocast on CUDA (the matrix products in bf16, the weights and the
  optimizer in fp32); nothing on the CPU, where bf16 matrix products are several times slower
  than fp32.
* ``synchronize(device)``: wait for the GPU's queued kernels, so that a timer measures them;
  nothing to wait for on the CPU.
* ``deterministic_kernels(device)``: bit-reproducible training on the CPU, for exact resumption.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class DeviceError(ValueError):
    """A device that this machine cannot provide. The message names it and says what to use instead."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; an explicit "cuda" without a GPU is an error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but torch.cuda.is_available() is False "
                          "(a CPU-only PyTorch, or no visible GPU); use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'") from None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Block until ``device`` has finished its queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
