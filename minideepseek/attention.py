"""Multi-head Latent Attention (MLA), DeepSeek-V2 section 2.1 / V3 report section 2.1.1.

Standard multi-head attention caches a key and a value per head per token:
n_heads * (192 + 128) = 40,960 numbers a layer for V3. MLA instead compresses the
token into a small **latent** c_KV (``kv_lora_rank`` = 512) from which every head's
key and value are re-expanded by ``wkv_b``. Only the latent needs caching.

RoPE does not commute with that re-expansion (a rotation between the latent and
the head would change with position), so MLA **decouples** position: each head's
query/key is ``[nope | pe]``; the ``nope`` part (``qk_nope_head_dim`` = 128) comes
from the latent, the ``pe`` part (``qk_rope_head_dim`` = 64) is rotated, and the
key's ``pe`` is a single vector shared by all heads. The cache is then the latent
plus one rotated ``k_pe``: 512 + 64 = 576 numbers a layer.

Data flow for one layer (paper equation numbers from the V3 report; official names,
hub names in brackets):

    query:  c_Q = q_norm(wq_a(x))                       (eq. 6)   [q_a_proj, q_a_layernorm]
            q = wq_b(c_Q) -> per head [q_nope | q_pe]   (eq. 7-9) [q_b_proj]
            (or q = wq(x) when q_lora_rank == 0)                  [q_proj]
    key/value:
            [c_KV | k_pe] = wkv_a(x)                    (eq. 1, 3) [kv_a_proj_with_mqa]
            k_pe = RoPE(k_pe), shared by all heads      (eq. 3)
            [k_nope | v] = wkv_b(kv_norm(c_KV)) per head (eq. 2, 5) [kv_a_layernorm, kv_b_proj]
            k = [k_nope | k_pe]                         (eq. 4)
    output: o = softmax(q k^T * scale + causal) v        (eq. 10)
            out = wo(o)                                 (eq. 11)  [o_proj]

This module computes attention over a full sequence (training and prefill). The
cached decode paths, including the "absorbed" one that never re-expands the latent,
build on the same weights in the inference chapter.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .indexer import Indexer, sparse_mla_forward
from .norm import RMSNorm
from .rope import apply_rotary_emb, softmax_scale


class MLA(nn.Module):
    """Multi-head Latent Attention (official ``MLA``; hub ``DeepseekV3Attention``).

    forward(x: (batch, seq, dim), freqs_cis: (seq, qk_rope_head_dim/2) complex) -> (batch, seq, dim)
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.q_lora_rank = config.q_lora_rank
        self.kv_lora_rank = config.kv_lora_rank
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.qk_head_dim = config.qk_head_dim
        self.v_head_dim = config.v_head_dim
        self.softmax_scale = softmax_scale(config)
        # "eager" writes the attention out (the lesson); "sdpa" calls PyTorch's fused kernel;
        # "sdpa_padded" pads V for the flash kernel (see causal_attention).
        self.backend = "eager"

        # --8<-- [start:mla_weights]
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(config.dim, self.n_heads * self.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(config.dim, self.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(self.q_lora_rank, config.norm_eps)
            self.wq_b = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(config.dim, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(self.kv_lora_rank, config.norm_eps)
        self.wkv_b = nn.Linear(self.kv_lora_rank, self.n_heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.wo = nn.Linear(self.n_heads * self.v_head_dim, config.dim, bias=False)
        # --8<-- [end:mla_weights]
        # DeepSeek-V3.2: a lightning indexer picks the keys each query attends to (indexer.py); None in V3.
        self.indexer = Indexer(config) if config.has_indexer else None

    # --8<-- [start:project_query]
    def project_query(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries split into their two parts.

        x: (batch, seq, dim) -> q_nope: (batch, seq, heads, qk_nope_head_dim),
                                q_pe: (batch, seq, heads, qk_rope_head_dim), rotated.
        """
        q = self.wq(x) if self.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.unflatten(-1, (self.n_heads, self.qk_head_dim))
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        return q_nope, apply_rotary_emb(q_pe, freqs_cis)
    # --8<-- [end:project_query]

    # --8<-- [start:compress_kv]
    def compress_kv(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What MLA caches: the normalised latent and the rotated shared key.

        x: (batch, seq, dim) -> latent: (batch, seq, kv_lora_rank) = kv_norm(c_KV),
                                k_pe: (batch, seq, qk_rope_head_dim), rotated.
        """
        latent, k_pe = self.wkv_a(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        k_pe = apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis).squeeze(2)  # one "head" shared by all
        return self.kv_norm(latent), k_pe
    # --8<-- [end:compress_kv]

    # --8<-- [start:expand_kv]
    def expand_kv(self, latent: torch.Tensor, k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-expand the latent into per-head keys and values.

        latent: (batch, seq, kv_lora_rank), k_pe: (batch, seq, qk_rope_head_dim)
        -> k: (batch, seq, heads, qk_head_dim), v: (batch, seq, heads, v_head_dim)
        """
        kv = self.wkv_b(latent).unflatten(-1, (self.n_heads, self.qk_nope_head_dim + self.v_head_dim))
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k = torch.cat([k_nope, k_pe.unsqueeze(2).expand(-1, -1, self.n_heads, -1)], dim=-1)
        return k, v
    # --8<-- [end:expand_kv]

    # --8<-- [start:mla_forward]
    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        if self.indexer is not None:  # DeepSeek-V3.2: attend to the indexer's top-k keys only
            return sparse_mla_forward(self, x, freqs_cis)
        q_nope, q_pe = self.project_query(x, freqs_cis)
        q = torch.cat([q_nope, q_pe], dim=-1)  # (b, s, h, qk_head_dim)
        k, v = self.expand_kv(*self.compress_kv(x, freqs_cis))
        o = causal_attention(q, k, v, self.softmax_scale, self.backend)  # (b, s, h, v_head_dim)
        return self.wo(o.flatten(2))
    # --8<-- [end:mla_forward]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     backend: str = "eager") -> torch.Tensor:
    """softmax(q k^T * scale, causal) v, per head.

    q, k: (batch, seq, heads, qk_head_dim); v: (batch, seq, heads, v_head_dim)
    -> (batch, seq, heads, v_head_dim). The softmax runs in float32.
    MLA's value head (128) is narrower than its query/key head (192). ``"sdpa"`` passes the
    tensors as they are: PyTorch's ``scaled_dot_product_attention`` accepts that, and on an
    H100 it dispatches to cuDNN's fused kernel (the flash backend refuses unequal head sizes).
    ``"sdpa_padded"`` pads V with zeros to 192 so that flash attention accepts it, and drops the
    padded output columns (zero columns of V give zero columns of the output: same result).
    """
    if backend in ("sdpa", "sdpa_padded"):
        value_dim = v.size(-1)
        if backend == "sdpa_padded":
            v = F.pad(v, (0, q.size(-1) - value_dim))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=True, scale=scale)
        return out[..., :value_dim].transpose(1, 2)
    if backend != "eager":
        raise ValueError(f"attention backend must be 'eager', 'sdpa' or 'sdpa_padded', got {backend!r}")
    # --8<-- [start:eager_attention]
    seq = q.size(1)
    scores = torch.einsum("bshd,bthd->bhst", q, k).float() * scale
    future = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1).to(v.dtype)
    return torch.einsum("bhst,bthd->bshd", probs, v)
    # --8<-- [end:eager_attention]
