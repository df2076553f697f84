"""RMSNorm: scale each vector to unit root-mean-square, then by a learned gain.

    y = x / sqrt(mean(x^2) + eps) * weight

DeepSeek-V3 uses it everywhere a normalisation appears: before attention
(``attn_norm``), before the feed-forward (``ffn_norm``), on the two low-rank latents
(``q_norm``, ``kv_norm``), at the end (``norm``) and inside the MTP modules.
Unlike LayerNorm there is no mean subtraction and no bias.
"""

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension (official ``RMSNorm``).

    x: (..., dim) -> (..., dim), same dtype as x.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    # --8<-- [start:forward]
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in float32 (as transformers does) so bf16 activations do not lose the small squares.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)
    # --8<-- [end:forward]
