"""eps added to the RMS instead of to the mean square: x / (sqrt(mean(x^2)) + eps).

Caught by: test_eps_is_the_one_passed
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    normed = wide / (wide.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)
    return (normed * weight.to(wide.dtype)).to(x.dtype)
