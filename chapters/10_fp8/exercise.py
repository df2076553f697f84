"""Chapter 10 exercise: DeepSeek-V3's fine-grained FP8, written as plain functions.

Fill in every function below, then grade your work with

    minideepseek grade 10            (or: pytest tests/exercises/test_10_fp8.py --student)

Conventions (the official inference code and the published checkpoints):
* a scale is the *dequantisation* multiplier s = amax / 448, so x ~= q * s;
* E4M3 is ``torch.float8_e4m3fn`` (largest value 448). On a CPU, float8 tensors can be cast to and
  from, but not multiplied or added: do the arithmetic in float32;
* clamp to [-448, 448] *before* casting to float8: what an out-of-range cast gives (NaN or 448)
  depends on the torch version, and x / s can land a hair above 448 by rounding. The grader watches
  every conversion to float8.
* Every contracted dimension (K below) is a multiple of 128.
"""

import torch

E4M3_MAX = 448.0


def quantize_activations(x: torch.Tensor, group: int = 128,
                         amax_floor: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """1 x 128 tile quantisation (the official ``act_quant``; report section 3.3.2, equation F1).

    x: (..., K) float, K a multiple of ``group``. For every row and every ``group`` consecutive
    channels: amax = the group's largest |x|, clamped to at least ``amax_floor`` (1e-4 for activations,
    1e-12 for gradients, which are far smaller); s = amax / 448; q = x / s, clamped to [-448, 448],
    cast to torch.float8_e4m3fn.
    Returns q: (..., K) float8_e4m3fn and scale: (..., K / group) float32, with
    x[..., k] ~= q[..., k] * scale[..., k // group].
    """
    raise NotImplementedError("quantize_activations: one scale per row per 128 channels, clamp, then cast")


def dequantize_blockwise(q: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """The checkpoint's weight dequantisation: W[i, j] = q[i, j] * scale_inv[i // block[0], j // block[1]].

    q: (out, in) float8_e4m3fn; scale_inv: (ceil(out / block[0]), ceil(in / block[1])) float32, the
    checkpoint's ``weight_scale_inv``. out and in need not be multiples of the block: the last blocks
    are narrower. Returns W: (out, in) float32.
    """
    raise NotImplementedError("dequantize_blockwise: multiply every element by its 128 x 128 block's scale")


def fp8_gemm(a_q: torch.Tensor, a_scale: torch.Tensor, b_q: torch.Tensor, b_scale: torch.Tensor,
             accumulator_bits: int | None = None) -> torch.Tensor:
    """The block-scaled FP8 product dequant(a) @ dequant(b)^T as V3's kernel computes it (equation F3).

    a_q: (M, K) float8 with a_scale: (M, K / 128), one scale per 1 x 128 tile (activations, gradients);
    b_q: (N, K) float8 with b_scale either (N, K / 128), 1 x 128 tiles, or (ceil(N / 128), K / 128),
    128 x 128 blocks (weights): tell them apart by b_scale.size(0) == N.
    For each 128-wide slice c = 0, 1, ... of K, in order:
        partial[m, n] = sum_{k in c} a_q[m, k] * b_q[n, k]          the codes, in float32: the tensor cores
        out[m, n]    += partial[m, n] * a_scale[m, c] * b_scale[row of n, c]   promoted to FP32: CUDA cores
    accumulator_bits: None sums each slice in float32. An int models the tensor core's narrow
    accumulator: partial starts at 0 and, for k through the slice in increasing order,
    partial = truncate_mantissa(partial + a_q[:, k, None] * b_q[None, :, k], accumulator_bits)
    (``minideepseek.fp8_gemm.truncate_mantissa``, float32 throughout). Returns out: (M, N) float32.
    """
    raise NotImplementedError("fp8_gemm: slice K by 128, multiply the codes, promote each slice with its scales")


def fp8_linear_backward(dy: torch.Tensor, x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor,
                        w_scale: torch.Tensor, gemm=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward pass of y = x W^T with both products in FP8 (report Figure 7, equation F4).

    dy: (T, out) float32, the gradient of y; x_q: (T, in) float8 and x_scale: (T, in / 128), the FP8
    copy of x the forward pass cached (1 x 128 tiles along the channels); w_q: (out, in) float8 and
    w_scale: (out / 128, in / 128), the weight's 128 x 128 blocks. T, in and out are multiples of 128.
    gemm(a_q, a_scale, b_q, b_scale) -> (M, N) is the block-scaled product (default: your ``fp8_gemm``).
    Gradients are quantised like activations but with amax_floor 1e-12.
        Dgrad  dx = dy W     contracts over out: a = dy in 1 x 128 tiles along out; b = W^T, whose
                             blocks are W's transposed (square blocks: the forward's FP8 weight serves again).
        Wgrad  dW = dy^T x   contracts over the tokens: a = dy^T in 1 x 128 tiles along the tokens;
                             b = x^T re-tiled along the tokens: dequantise x_q, transpose, quantise again.
    Returns dx: (T, in) and dW: (out, in), float32.
    """
    raise NotImplementedError("fp8_linear_backward: Dgrad with W^T's blocks, Wgrad with both operands re-tiled "
                              "along the tokens")
