"""One Transformer layer (official ``Block``; hub ``DeepseekV3DecoderLayer``).

Pre-norm residual: each sub-layer sees a normalised input and adds its output back,

    h   = x + MLA(attn_norm(x))
    out = h + FFN(ffn_norm(h))

FFN is a dense SwiGLU ``MLP`` in the first ``n_dense_layers`` layers (3 in V3; the V3
report gives no reason, and DeepSeekMoE, section 5, kept its first layer dense because the
load balance of that layer converged especially slowly) and ``MoE`` in every later layer.
The ablation baselines of chapter 13 swap MLA for standard attention (``baselines.py``) or the
MoE for a dense MLP (``ModelConfig.attention``, ``ModelConfig.dense_ffn_dim``).
"""

import torch
from torch import nn

from .attention import MLA
from .baselines import StandardAttention
from .config import ModelConfig
from .moe import MLP, MoE
from .norm import RMSNorm


class Block(nn.Module):
    """One layer. x: (batch, seq, dim), freqs_cis: (seq, qk_rope_head_dim/2) -> (batch, seq, dim)"""

    # --8<-- [start:block]
    def __init__(self, layer_id: int, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = MLA(config) if config.attention == "mla" else StandardAttention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn = MoE(config) if config.is_moe_layer(layer_id) else MLP(config.dim, config.ffn_width(layer_id))

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        h = x + self.attn(self.attn_norm(x), freqs_cis)
        return h + self.ffn(self.ffn_norm(h))
    # --8<-- [end:block]
