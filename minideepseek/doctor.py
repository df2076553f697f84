"""``minideepseek doctor``: what this machine can run, one OK/FAIL line per check.

A FAIL is not always a problem: without a GPU the ``gpu`` and ``fp8`` tests skip and every
chapter still runs on the CPU. Only a Python or PyTorch that is too old makes the command
exit with status 1.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from packaging.requirements import Requirement
from packaging.version import Version

MIN_PYTHON = (3, 10)
MIN_TORCH = Version("2.4")
FP8_CAPABILITY = (8, 9)  # Ada and Hopper: the first GPUs with FP8 tensor cores


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.name:<22}{self.detail}"


def _attempt(name: str, probe: Callable[[], str]) -> Check:
    """Run ``probe``; its return value is the detail of an OK, its exception the detail of a FAIL."""
    try:
        return Check(name, True, probe())
    except Exception as error:  # noqa: BLE001 - a probe may fail in any way: that is what is being checked
        message = str(error).strip().splitlines()
        return Check(name, False, f"{type(error).__name__}: {message[0] if message else ''}")


def python_check() -> Check:
    ok = sys.version_info >= MIN_PYTHON
    return Check("Python", ok, f"{platform.python_version()} (needs >= {'.'.join(map(str, MIN_PYTHON))})", True)


def torch_check() -> Check:
    version = Version(torch.__version__.split("+")[0])
    build = f", CUDA {torch.version.cuda}" if torch.version.cuda else ", CPU build"
    return Check("PyTorch", version >= MIN_TORCH, f"{torch.__version__}{build} (needs >= {MIN_TORCH})", True)


def device_check() -> Check:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Check("CUDA GPU", True, f"{torch.cuda.device_count()} x {props.name}, compute capability "
                     f"{props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB")
    return Check("CUDA GPU", False, f"none: everything runs on the CPU ({torch.get_num_threads()} threads); "
                 "gpu and fp8 tests skip")


def mps_check() -> Check:
    """Apple's Metal GPU (MPS): available or not, and the precision policy it gets (``device.autocast_dtype``)."""
    from .device import autocast_dtype, mps_available

    if not mps_available():
        why = "not an Apple Silicon Mac" if sys.platform != "darwin" else "needs Apple Silicon and macOS 12.3+"
        return Check("Apple GPU (MPS)", False, f"none ({why}); --device mps is refused here")

    def probe() -> str:
        a = torch.randn(16, 16, device="mps")
        (a @ a).sum().item()
        dtype = autocast_dtype(torch.device("mps"))
        return (f"available: --device mps (auto picks it when there is no CUDA GPU); "
                f"{'bf16 autocast' if dtype else 'fp32 (bf16 autocast needs torch >= 2.6 and macOS 14+)'}")

    return _attempt("Apple GPU (MPS)", probe)


def bf16_check() -> Check:
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def probe() -> str:
        if device == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("this GPU has no bfloat16 support")
        a = torch.randn(16, 16, device=device)
        error = ((a.bfloat16() @ a.bfloat16()).float() - a @ a).abs().max().item()
        return f"bfloat16 matmul on {device} (max error vs float32 {error:.2g})"

    return _attempt("bfloat16", probe)


def fp8_storage_check() -> Check:
    def probe() -> str:
        x = torch.tensor([-448.0, -2.75, -1.5, 0.0, 0.015625, 1.0, 240.0, 448.0])  # exactly representable
        back = x.to(torch.float8_e4m3fn).float()
        if not torch.equal(back, x):
            raise RuntimeError(f"float8_e4m3fn round trip changed {x.tolist()} into {back.tolist()}")
        return "float8_e4m3fn casts (what loading FP8 checkpoints needs)"

    return _attempt("FP8 weights", probe)


def fp8_matmul_check() -> Check:
    if not torch.cuda.is_available():
        return Check("FP8 matmul", False, "needs a CUDA GPU of compute capability >= 8.9")
    capability = torch.cuda.get_device_capability()
    if capability < FP8_CAPABILITY:
        return Check("FP8 matmul", False, f"compute capability {capability[0]}.{capability[1]} < 8.9")

    def probe() -> str:
        a = torch.randn(32, 32, device="cuda").to(torch.float8_e4m3fn)
        b = torch.randn(32, 32, device="cuda").to(torch.float8_e4m3fn).t()
        one = torch.ones((), device="cuda")
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return f"torch._scaled_mm on compute capability {capability[0]}.{capability[1]}"

    return _attempt("FP8 matmul", probe)


def compile_check() -> Check:
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def probe() -> str:
        compiled = torch.compile(lambda x: torch.nn.functional.silu(x) * x)
        x = torch.randn(64, device=device)
        torch.testing.assert_close(compiled(x), torch.nn.functional.silu(x) * x)
        return f"a small function compiles and runs on {device}"

    return _attempt("torch.compile", probe)


def extras_checks() -> list[Check]:
    """One line per optional extra of the package (``pip install -e ".[dev]"`` etc.)."""
    try:
        requirements = [Requirement(r) for r in importlib.metadata.requires("minideepseek") or []]
    except importlib.metadata.PackageNotFoundError:
        return [Check("extras", False, "minideepseek is not installed: pip install -e . from the repository")]
    extras = sorted({extra for r in requirements if r.marker
                     for extra in re.findall(r'extra == "([^"]+)"', str(r.marker))})
    checks = []
    for extra in extras:
        missing = []
        for requirement in requirements:
            if not (requirement.marker and requirement.marker.evaluate({"extra": extra})):
                continue
            try:
                installed = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(f"{requirement.name} (not installed)")
                continue
            if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
                missing.append(f"{requirement.name} {installed} (needs {requirement.specifier})")
        detail = f"missing {', '.join(missing)}: pip install -e \".[{extra}]\"" if missing else "installed"
        checks.append(Check(f"extra [{extra}]", not missing, detail))
    return checks


def run_checks(compile: bool = True) -> Iterator[Check]:
    """Every check, one at a time (torch.compile takes ~20 s on a CPU the first time)."""
    for check in (python_check, torch_check, device_check, mps_check, bf16_check, fp8_storage_check,
                  fp8_matmul_check):
        yield check()
    yield compile_check() if compile else Check("torch.compile", False, "not checked (--skip-compile)")
    yield from extras_checks()


def doctor(skip_compile: bool = False) -> int:
    """Print every check as it finishes; return the exit status (1 when a required check fails)."""
    failed_required = False
    for check in run_checks(compile=not skip_compile):
        print(check.line(), flush=True)
        failed_required |= check.required and not check.ok
    return int(failed_required)
