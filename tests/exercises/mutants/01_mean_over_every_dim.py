"""The mean square taken over the whole tensor instead of over each vector's last dimension.

Caught by: test_matches_the_formula_in_float64, test_unit_rms_and_scale_invariance
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    normed = wide * torch.rsqrt(wide.pow(2).mean() + eps)
    return (normed * weight.to(wide.dtype)).to(x.dtype)
