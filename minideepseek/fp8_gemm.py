"""The FP8 matrix product: one API, two backends (DeepSeek-V3 report section 3.3.2).

Both operands are quantised along the contracted dimension K (``fp8.quantize``):

    a: (M, K) FP8, one scale per group     (activations: 1 x 128 tiles)
    b: (N, K) FP8, one scale per group     (weights: 128 x 128 blocks, the nn.Linear layout)
    y = dequant(a) @ dequant(b)^T          (M, N), fp32 or bf16

Because every scale is constant over a 128-wide slice of K, the product can be
computed slice by slice: multiply the raw FP8 codes (tensor cores), then multiply
the slice's partial sum by its two scales and add it into an FP32 accumulator
(CUDA cores). That is the report's **promotion every N_C = 128 elements**: the
Hopper tensor core's own accumulator keeps only about 14 bits, and over K = 4096
that loses percents (``limited_accumulator_matmul`` reproduces the effect).

Backends:

* ``"simulated"`` runs anywhere: the slice loop above in fp32, on dequantised-exact
  FP8 values (``simulated_matmul``). It is the reference the hardware is tested against.
* ``"scaled_mm"`` runs ``torch._scaled_mm`` / ``torch.nn.functional.scaled_mm`` on a
  CUDA GPU of compute capability 8.9+ (Ada, Hopper): per-tensor and per-row scales
  there, 1x128 / 128x128 blocks on Hopper with a torch that has them (checked once
  per device against the simulation, because a wrong layout returns garbage silently).
* ``"auto"`` takes ``"scaled_mm"`` where this operand pair can run on the device and
  ``"simulated"`` elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .fp8 import Fp8Tensor, quantize

PROMOTION_INTERVAL = 128  # N_C: elements of K accumulated on the tensor core before promotion to fp32
BACKENDS = ("simulated", "scaled_mm", "auto")


def _check_operands(a: Fp8Tensor, b: Fp8Tensor) -> None:
    if a.data.dim() != 2 or b.data.dim() != 2 or a.data.size(1) != b.data.size(1):
        raise ValueError(f"fp8 matmul needs a: (M, K) and b: (N, K) with the same K, got "
                         f"{tuple(a.data.shape)} and {tuple(b.data.shape)}")


def _scale_per_slice(t: Fp8Tensor) -> torch.Tensor:
    """The scale of every (row, K-slice) pair: (rows, ceil(K / 128)).

    Needs scales that are constant over each 128-wide slice of K: groups along K of a
    multiple of 128, or one group spanning all of K (per-row, per-tensor).
    """
    rows, k = t.data.shape
    group_rows, group_k = t.group
    if group_k % PROMOTION_INTERVAL and group_k < k:
        raise ValueError(f"groups of {group_k} along K split a {PROMOTION_INTERVAL}-wide slice of K; use groups "
                         f"of a multiple of {PROMOTION_INTERVAL} or one group over all of K")
    slices = math.ceil(k / PROMOTION_INTERVAL)
    row_group = torch.arange(rows, device=t.scale.device) // group_rows
    slice_group = torch.arange(slices, device=t.scale.device) * PROMOTION_INTERVAL // group_k
    return t.scale[row_group][:, slice_group]


# --8<-- [start:simulated]
def simulated_matmul(a: Fp8Tensor, b: Fp8Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """dequant(a) @ dequant(b)^T the way the report's kernel computes it, in fp32.

    a: (M, K), b: (N, K) -> (M, N). For each 128-wide slice of K, the FP8 codes are multiplied
    exactly (tensor cores; the sum of 128 products is rounded only to fp32) and the slice's partial
    sum is promoted: scaled by a's and b's scales for that slice and added to an fp32 accumulator.
    """
    _check_operands(a, b)
    a_scale, b_scale = _scale_per_slice(a), _scale_per_slice(b)  # (M, slices), (N, slices)
    a_codes, b_codes = a.data.float(), b.data.float()  # exact: every FP8 value is an fp32 value
    out = torch.zeros(a_codes.size(0), b_codes.size(0), device=a_codes.device)
    with torch.autocast(a_codes.device.type, enabled=False):  # keep autocast from rounding codes to bf16
        for i, start in enumerate(range(0, a_codes.size(1), PROMOTION_INTERVAL)):
            k_slice = slice(start, start + PROMOTION_INTERVAL)
            partial = a_codes[:, k_slice] @ b_codes[:, k_slice].T  # "tensor cores"
            out += partial * a_scale[:, i, None] * b_scale[None, :, i]  # "CUDA cores": promote, scale, add
    return out.to(out_dtype)
# --8<-- [end:simulated]


# --8<-- [start:accumulator]
def truncate_mantissa(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep ``bits`` significant bits of every element, dropping the rest (round toward zero)."""
    mantissa, exponent = torch.frexp(x)  # x = mantissa * 2^exponent, 0.5 <= |mantissa| < 1
    return torch.ldexp(torch.trunc(mantissa * 2.0**bits) / 2.0**bits, exponent)


def limited_accumulator_matmul(a: torch.Tensor, b: torch.Tensor, accumulator_bits: int = 14,
                               promote_every: int | None = None) -> torch.Tensor:
    """a @ b^T with an accumulator that keeps only ``accumulator_bits`` significant bits.

    a: (M, K), b: (N, K) -> (M, N) float64. Each product is added to the running sum, which
    is truncated after every addition, as when the tensor core aligns a product to the
    accumulator's exponent and drops what falls below its last bit (about 14 bits on H800,
    report section 3.3.2). With ``promote_every`` the running sum is flushed into a float64
    accumulator every that many elements of K, the report's fix.
    """
    a, b = a.double(), b.double()
    running = torch.zeros(a.size(0), b.size(0), dtype=torch.float64, device=a.device)
    promoted = torch.zeros_like(running)
    for k in range(a.size(1)):
        running = truncate_mantissa(running + a[:, k, None] * b[None, :, k], accumulator_bits)
        if promote_every and (k + 1) % promote_every == 0:
            promoted += running
            running = torch.zeros_like(running)
    return promoted + running
# --8<-- [end:accumulator]


# --------------------------------------------------------------------------- hardware backend
def fp8_hardware_available(device: torch.device | str) -> bool:
    """Whether ``device`` has FP8 tensor cores (CUDA compute capability 8.9+: Ada, Hopper, Blackwell)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 9)


def _scaling_kind(a: Fp8Tensor, b: Fp8Tensor) -> str | None:
    """Which ``_scaled_mm`` recipe reads this pair of operands, or None."""
    k = a.data.size(1)
    if a.scale.numel() == 1 and b.scale.numel() == 1:
        return "tensorwise"
    if a.group == (1, k) and b.group == (1, k):
        return "rowwise"
    if a.group == (1, 128) and b.group in ((128, 128), (1, 128)):
        return "blockwise"
    return None


_BLOCKWISE_WORKS: dict[tuple[str, tuple[int, int]], bool] = {}


def blockwise_scaled_mm_works(device: torch.device, b_group: tuple[int, int]) -> bool:
    """Whether this GPU and torch compute 1x128 x ``b_group`` block-scaled products correctly.

    Tried once per device on a small product whose K is not a multiple of 512 (the case
    that returned wrong numbers without an error in torch 2.11) and compared with the
    simulation. Needs Hopper (SM90) and a torch with ``F.scaled_mm`` block scaling.
    """
    key = (str(device), b_group)
    if key not in _BLOCKWISE_WORKS:
        works = False
        if (hasattr(F, "scaled_mm") and fp8_hardware_available(device)
                and torch.cuda.get_device_capability(device) >= (9, 0)):
            generator = torch.Generator().manual_seed(0)
            a = quantize(torch.randn(256, 640, generator=generator).to(device), (1, 128))
            b = quantize(torch.randn(384, 640, generator=generator).to(device), b_group)
            try:
                out = _blockwise_scaled_mm(a, b).float()
                reference = simulated_matmul(a, b)
                works = bool((out - reference).norm() <= 1e-2 * reference.norm())
            except RuntimeError:
                works = False
        _BLOCKWISE_WORKS[key] = works
    return _BLOCKWISE_WORKS[key]


def scaled_mm_unsupported_reason(a: Fp8Tensor, b: Fp8Tensor) -> str | None:
    """Why ``scaled_mm`` cannot run this pair of operands here, or None when it can."""
    kind = _scaling_kind(a, b)
    if kind is None:
        return f"no _scaled_mm recipe reads groups {a.group} x {b.group}"
    device = a.data.device
    m, k, n = a.data.size(0), a.data.size(1), b.data.size(0)
    if 0 in (m, k, n):
        return "an operand is empty"
    if n % 16:
        return f"_scaled_mm needs N divisible by 16, got N={n}"
    if kind == "blockwise":
        if not blockwise_scaled_mm_works(device, b.group):
            return f"block-scaled _scaled_mm is not available or not correct on {device} with torch {torch.__version__}"
        return None
    if k % 16:
        return f"_scaled_mm needs K divisible by 16, got K={k}"
    if device.type != "cpu" and not fp8_hardware_available(device):
        return f"{device} has no FP8 tensor cores (needs compute capability 8.9+)"
    return None  # tensorwise and rowwise also run on the CPU (a slow reference implementation)


def _pad_k(t: torch.Tensor, k: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last dimension of a 2-D tensor to ``k`` (float8 has no F.pad on the CPU, cat works)."""
    extra = k - t.size(1)
    if extra == 0:
        return t
    return torch.cat([t, torch.full((t.size(0), extra), value, dtype=t.dtype, device=t.device)], dim=1)


def _blockwise_scaled_mm(a: Fp8Tensor, b: Fp8Tensor) -> torch.Tensor:
    """1x128 x (128x128 or 1x128) block-scaled product on Hopper; (M, N) bf16.

    cuBLAS wants the count of 128-wide K slices padded to a multiple of 4; with fewer, torch
    2.11 returned wrong numbers without an error. We pad K itself with zeros to a multiple of
    512, which changes no sum and needs no special scale layout.
    """
    k = 512 * math.ceil(a.data.size(1) / 512)
    slices = k // 128
    # Row-major (M, K) and (N, K) data, so that b_data.t() is the column-major operand _scaled_mm wants
    # (a transposed Fp8Tensor, as in Dgrad, holds a view).
    a_data, b_data = _pad_k(a.data.contiguous(), k), _pad_k(b.data.contiguous(), k)
    a_scale = _pad_k(a.scale, slices, 1.0).t().contiguous().t()  # (M, slices), M-major
    if b.group == (128, 128):
        b_scale, b_recipe = _pad_k(b.scale, slices, 1.0).contiguous().t(), F.ScalingType.BlockWise128x128
    else:
        b_scale, b_recipe = _pad_k(b.scale, slices, 1.0).t().contiguous().t(), F.ScalingType.BlockWise1x128
    return F.scaled_mm(a_data, b_data.t(), a_scale, F.ScalingType.BlockWise1x128, b_scale, b_recipe,
                       output_dtype=torch.bfloat16)


def scaled_mm(a: Fp8Tensor, b: Fp8Tensor, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """dequant(a) @ dequant(b)^T on FP8 tensor cores. a: (M, K), b: (N, K) -> (M, N).

    ``_scaled_mm`` takes a row-major (M, K) and a column-major (K, N) operand, so the weight
    layout (N, K) is passed as ``b.t()``; its scales are dequantisation multipliers, as ours.
    The hardware writes bf16 (row-wise scaling supports nothing else); the result is then cast.
    """
    _check_operands(a, b)
    reason = scaled_mm_unsupported_reason(a, b)
    if reason is not None:
        raise RuntimeError(f"scaled_mm: {reason}; use backend='simulated' or 'auto'")
    kind = _scaling_kind(a, b)
    if kind == "blockwise":
        return _blockwise_scaled_mm(a, b).to(out_dtype)
    a_data, b_data = a.data.contiguous(), b.data.contiguous()
    if kind == "tensorwise":
        out = torch._scaled_mm(a_data, b_data.t(), a.scale.reshape(()), b.scale.reshape(()), out_dtype=torch.bfloat16)
    else:  # rowwise: scale_a (M, 1), scale_b (1, N)
        out = torch._scaled_mm(a_data, b_data.t(), a.scale.reshape(-1, 1).contiguous(),
                               b.scale.reshape(1, -1).contiguous(), out_dtype=torch.bfloat16)
    return out.to(out_dtype)


# --8<-- [start:dispatch]
def fp8_matmul(a: Fp8Tensor, b: Fp8Tensor, out_dtype: torch.dtype = torch.float32,
               backend: str = "simulated") -> torch.Tensor:
    """y = dequant(a) @ dequant(b)^T. a: (M, K), b: (N, K) -> (M, N) ``out_dtype``.

    backend: "simulated" (anywhere), "scaled_mm" (FP8 tensor cores, raises where it cannot run),
    "auto" (tensor cores where this pair of operands can run on them, simulation elsewhere).
    """
    if backend == "auto":
        on_hardware = fp8_hardware_available(a.data.device) and scaled_mm_unsupported_reason(a, b) is None
        backend = "scaled_mm" if on_hardware else "simulated"
    if backend == "simulated":
        return simulated_matmul(a, b, out_dtype)
    if backend == "scaled_mm":
        return scaled_mm(a, b, out_dtype)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
# --8<-- [end:dispatch]
