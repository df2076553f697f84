"""Multi-Token Prediction (MTP), DeepSeek-V3 report section 2.2.

Besides the next token, V3 learns to predict the token after it. The k-th MTP
module takes the main model's hidden state h_i (or the previous module's) for
position i, and the embedding of the token at i+k, and predicts token i+k+1
(eq. 21-23):

    h'_i = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h_i)])     embedding first, as released
    h^k  = Block(h'_{1..T-k})                               one full Transformer block
    P^k  = head(norm(h^k))                                   shared embedding and head

The report writes the concatenation as [h ; emb], but the released weights (and
vLLM, torchtitan) put the embedding first; we follow the weights. The prediction
chain stays causal: module k sees tokens up to i+k and predicts i+k+1.

Hub names: ``model.layers.{n_layers + k - 1}.{enorm, hnorm, eh_proj, shared_head.norm}``;
the block's weights use the usual layer names.
"""

import torch
from torch import nn

from .block import Block
from .config import ModelConfig
from .norm import RMSNorm


class MTPModule(nn.Module):
    """One MTP depth (hub layer ``layer_id`` = n_layers + k - 1).

    forward(h: (batch, seq, dim) previous depth's hidden states, next_embeddings: (batch, seq, dim)
    embeddings of the tokens k positions ahead, freqs_cis) -> h^k: (batch, seq, dim).
    Predictions are ``head(norm(h^k))`` with the main model's head.
    """

    def __init__(self, layer_id: int, config: ModelConfig):
        super().__init__()
        self.enorm = RMSNorm(config.dim, config.norm_eps)
        self.hnorm = RMSNorm(config.dim, config.norm_eps)
        self.eh_proj = nn.Linear(2 * config.dim, config.dim, bias=False)
        self.block = Block(layer_id, config)
        self.norm = RMSNorm(config.dim, config.norm_eps)  # hub: shared_head.norm

    def forward(self, h: torch.Tensor, next_embeddings: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        combined = self.eh_proj(torch.cat([self.enorm(next_embeddings), self.hnorm(h)], dim=-1))
        return self.block(combined, freqs_cis)
