"""Normalised in float32, but cast back to bf16 BEFORE the gain, which is then applied in bf16 (two roundings).

Caught by: test_float32_and_bfloat16_inputs_keep_their_dtype
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    normed = (wide * torch.rsqrt(wide.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
    return normed * weight.to(x.dtype)
