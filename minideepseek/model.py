"""The DeepSeek-V3 Transformer: embedding, blocks, final norm, output head.

The ``Transformer`` stacks ``n_layers`` pre-norm residual blocks (``block.py``) between
the token embedding and the output head. It returns logits at every position, which
is what training needs (the official demo keeps only the last position).

When ``n_mtp_layers > 0`` the model also owns its Multi-Token Prediction modules
(``mtp``, see ``mtp.py``), as the released checkpoint does; they share the embedding
and the head, and only training (or speculative decoding) runs them.
"""

import torch
from torch import nn

from .block import Block
from .config import ModelConfig
from .moe import Gate
from .mtp import MTPModule
from .norm import RMSNorm
from .rope import precompute_freqs_cis


class Transformer(nn.Module):
    """DeepSeek-V3. forward(tokens: (batch, seq) int64) -> logits: (batch, seq, vocab_size)"""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # --8<-- [start:transformer_modules]
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(layer_id, config) for layer_id in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.head.weight = self.embed.weight
        # The MTP modules sit after the main layers (hub layer index n_layers + k - 1).
        self.mtp = nn.ModuleList(MTPModule(config.n_layers + k, config) for k in range(config.n_mtp_layers))
        # --8<-- [end:transformer_modules]
        # Kept out of the state dict and out of .to(dtype): a complex table cast to bf16 would lose its
        # imaginary part. It is rebuilt on the device it is first needed on.
        self._freqs_cis: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The V3 report's initialisation: every matrix from N(0, init_std), norms at 1, gate bias at 0."""
        if self.embed.weight.is_meta:  # a model built on the meta device has no values to initialise
            return
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, Gate):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def freqs_cis(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """The RoPE table for positions 0 .. seq_len-1: (seq_len, qk_rope_head_dim/2) complex64."""
        if seq_len > self.config.max_seq_len:
            raise ValueError(f"sequence of {seq_len} tokens exceeds ModelConfig.max_seq_len={self.config.max_seq_len}")
        if self._freqs_cis is None or self._freqs_cis.device != device:
            # Outside inference mode even when generate() builds it first: an inference tensor could
            # never be saved for backward, and every later training forward would fail.
            with torch.inference_mode(False):
                self._freqs_cis = precompute_freqs_cis(self.config, device=device)
        return self._freqs_cis[:seq_len]

    # --8<-- [start:transformer_forward]
    def forward_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last layer's output before the final norm. tokens: (batch, seq) -> (batch, seq, dim)"""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, seq) integer ids, got shape {tuple(tokens.shape)}")
        freqs_cis = self.freqs_cis(tokens.size(1), tokens.device)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h, freqs_cis)
        return h

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.forward_hidden(tokens)))
    # --8<-- [end:transformer_forward]
