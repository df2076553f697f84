"""RMSNorm computed entirely in the input's dtype: bf16 squares, mean, rsqrt and products, no float32 upcast.

Caught by: test_float32_and_bfloat16_inputs_keep_their_dtype
"""

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.to(x.dtype)
