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

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .block import Block
from .config import ModelConfig
from .norm import RMSNorm

if TYPE_CHECKING:
    from .model import Transformer


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

    # --8<-- [start:mtp_module_forward]
    def forward(self, h: torch.Tensor, next_embeddings: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        combined = self.eh_proj(torch.cat([self.enorm(next_embeddings), self.hnorm(h)], dim=-1))
        return self.block(combined, freqs_cis)
    # --8<-- [end:mtp_module_forward]


def mtp_logits(model: Transformer, h: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The predictions of every MTP depth, each module chained on the previous one (eq. 21-23).

    h: (batch, seq, dim) the main model's last hidden states before its final norm (``forward_hidden``,
    as torchtitan feeds them); tokens: (batch, seq) the input tokens that produced h.
    Returns ``[logits^1, ..., logits^D]`` with logits^k: (batch, seq - k, vocab_size).

    Depth k at position i combines h^{k-1}_i with the embedding of token i+k and predicts token
    i+k+1. Positions whose token i+k lies beyond the input have nothing to combine, so each depth
    is one position shorter than the one before; the rest keep their RoPE positions 0, 1, ...
    """
    seq = tokens.size(1)
    if seq <= len(model.mtp):
        raise ValueError(f"MTP with depth {len(model.mtp)} needs sequences longer than {len(model.mtp)} tokens, "
                         f"got {seq}")
    # --8<-- [start:mtp_logits]
    freqs_cis = model.freqs_cis(seq, tokens.device)
    logits = []
    for k, module in enumerate(model.mtp, start=1):
        length = seq - k
        h = module(h[:, :length], model.embed(tokens[:, k:]), freqs_cis[:length])
        logits.append(model.head(module.norm(h)))
    return logits
    # --8<-- [end:mtp_logits]
