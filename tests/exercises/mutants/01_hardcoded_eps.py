"""eps hard-coded to LLaMA's 1e-5 instead of the value passed.

Caught by: test_eps_is_the_one_passed
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    normed = wide * torch.rsqrt(wide.pow(2).mean(dim=-1, keepdim=True) + 1e-5)
    return (normed * weight.to(wide.dtype)).to(x.dtype)
