"""Chapter 01 exercise: RMSNorm as one function.

Grade it with ``minideepseek grade 01``.
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dimension (Zhang & Sennrich 2019, eq. 4).

    x: (..., dim) of any float dtype; weight: (dim,). Returns (..., dim) in x's dtype.
    Compute in at least float32 (float64 stays float64), so that bf16 inputs do not lose the
    small squares, and cast back to x's dtype at the end.
    """
    raise NotImplementedError("mean of squares over the last dim, rsqrt with eps, times weight")
