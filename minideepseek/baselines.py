"""Standard attention, the baseline MLA is measured against (chapter 13).

DeepSeek-V2 (section 2.1 and appendix D) compares MLA with the attention it replaces. Every
baseline here gives each query head its own query, and keys and values come from ``kv_heads``
heads, each shared by ``n_heads / kv_heads`` query heads:

    mha   kv_heads = n_heads   multi-head attention (Vaswani et al. 2017)
    gqa   kv_heads = n_kv_heads grouped-query attention (Ainslie et al. 2023; Llama 2 70B, Llama 3)
    mqa   kv_heads = 1         multi-query attention (Shazeer 2019)

    q = wq(x) -> (heads, qk_head_dim),  k = wk(x) -> (kv_heads, qk_head_dim),  v = wv(x) -> (kv_heads, v_head_dim)
    q, k = RoPE(q), RoPE(k)            over the whole head: nothing is re-expanded from a latent, so no
                                       decoupling is needed (contrast MLA's shared k_pe)
    out = wo(softmax(q k^T * scale + causal) v)

The head widths are MLA's (qk_head_dim for queries and keys, v_head_dim for values), so the
comparison changes what is cached, not the attention's shape: per token and layer a baseline
caches kv_heads * (qk_head_dim + v_head_dim) numbers, MLA kv_lora_rank + qk_rope_head_dim.
Chosen with ``ModelConfig(attention="mha" | "gqa" | "mqa", n_kv_heads=...)``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .attention import causal_attention
from .config import ModelConfig
from .rope import apply_rotary_emb, precompute_freqs_cis, softmax_scale


# --8<-- [start:standard_attention]
class StandardAttention(nn.Module):
    """MHA / GQA / MQA with RoPE on the whole head.

    forward(x: (batch, seq, dim), freqs_cis: MLA's table, unused: the rotation here spans the whole
    head, so the layer keeps its own (seq, qk_head_dim/2) table) -> (batch, seq, dim)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.kv_heads = config.n_heads, config.kv_heads
        self.head_dim, self.v_head_dim = config.qk_head_dim, config.v_head_dim
        self.softmax_scale = softmax_scale(config)  # the same 1/sqrt(qk_head_dim) (and YaRN factor) as MLA
        self.backend = "eager"  # as MLA.backend: "eager", "sdpa" or "sdpa_padded"
        self.wq = nn.Linear(config.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, self.kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, self.kv_heads * self.v_head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.v_head_dim, config.dim, bias=False)
        # RoPE (with YaRN when it is on) over all qk_head_dim dimensions of a head.
        self.rope_config = dataclasses.replace(config, attention="mla", n_kv_heads=0,
                                               qk_rope_head_dim=config.qk_head_dim)
        self._freqs_cis: torch.Tensor | None = None

    def rotary_table(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """(seq_len, qk_head_dim/2) complex64, built once per device (outside inference mode, as the model's)."""
        if self._freqs_cis is None or self._freqs_cis.device != device:
            with torch.inference_mode(False):
                self._freqs_cis = precompute_freqs_cis(self.rope_config, device=device)
        return self._freqs_cis[:seq_len]

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        rotary = self.rotary_table(x.size(1), x.device)
        q = apply_rotary_emb(self.wq(x).unflatten(-1, (self.n_heads, self.head_dim)), rotary)
        k = apply_rotary_emb(self.wk(x).unflatten(-1, (self.kv_heads, self.head_dim)), rotary)
        v = self.wv(x).unflatten(-1, (self.kv_heads, self.v_head_dim))
        # Each key/value head serves n_heads / kv_heads consecutive query heads.
        group = self.n_heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        o = causal_attention(q, k, v, self.softmax_scale, self.backend)  # (b, s, h, v_head_dim)
        return self.wo(o.flatten(2))
# --8<-- [end:standard_attention]
