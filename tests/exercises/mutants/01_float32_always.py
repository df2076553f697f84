"""Always computes in float32, even for float64 inputs (and returns float32): precision and dtype lost.

Caught by: test_matches_the_formula_in_float64
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float()
