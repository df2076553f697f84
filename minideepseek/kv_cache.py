"""KV caches for decoding with MLA: the per-head cache and the latent ("absorbed") cache.

Generating token t needs every layer's keys and values of tokens 0 .. t-1. Keeping
them in a cache turns each new token into one small forward pass, and then *reading
the cache* is the cost of a decode step: one query per sequence against thousands of
cached tokens is a matrix-vector product, limited by memory bandwidth, not arithmetic.

The official inference code (``inference/model.py``, ``attn_impl``) has two ways to
cache MLA, and so do we:

**naive** (``PerHeadCache``): expand each new token once through ``wkv_b`` and cache
every head's key ``[k_nope | k_pe]`` and value: n_heads x (qk_head_dim + v_head_dim)
values per token per layer, 128 x (192 + 128) = 40,960 for V3.

**absorbed** (``LatentCache``): cache only what MLA compresses to, the normalised latent
c = kv_norm(c_KV) and the rotated shared key k_pe: kv_lora_rank + qk_rope_head_dim
= 512 + 64 = 576 values, 71x less. The latent is never expanded. Splitting ``wkv_b``
per head into W_UK (latent -> k_nope) and W_UV (latent -> v), associativity moves
both matrices off the cached tokens:

    q_nope . k_nope_t = q_nope . (W_UK c_t) = (W_UK^T q_nope) . c_t      W_UK "absorbed" into the query
    sum_t p_t v_t     = sum_t p_t (W_UV c_t) = W_UV (sum_t p_t c_t)      W_UV applied once, after

so every head scores the same 576-value cached vectors: attention becomes multi-query
attention over the latent, with a 512-wide query per head. (DeepSeek-V2 section 2.1.3;
official ``absorb`` branch; vLLM calls it the "data-movement friendly" form.)

The trap is in between: caching the latent but re-expanding all of it through
``wkv_b`` at every step. It stores little, but does n_heads x 256 x 512 multiply-adds
and writes 40,960 values per cached token per step (``reexpanded_attention``, kept for
the benchmark).

Tokens of a batch may sit at different positions (prompts of different lengths, rows
that accepted different numbers of speculative tokens). Each row therefore carries its
own positions: a token at position p is written to cache slot p, is rotated by RoPE
for position p, and attends to slots 0 .. p of its own row. Slots beyond p may hold
stale values (padding, rejected drafts); the causal mask hides them until they are
overwritten.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .attention import MLA
from .block import Block
from .config import ModelConfig
from .fp8 import dequantize_blockwise

CACHE_KINDS = ("absorbed", "naive")


def causal_mask(positions: torch.Tensor, length: int) -> torch.Tensor:
    """Which cache slots each new token may attend to: slot j is visible from position p iff j <= p.

    positions: (batch, seq) int64 -> (batch, seq, length) bool
    """
    return torch.arange(length, device=positions.device) <= positions.unsqueeze(-1)


def project(mla: MLA, x: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The new tokens' queries and compressed keys, each token rotated for its own position.

    x: (batch, seq, dim); freqs_cis: (batch, seq, qk_rope_head_dim/2) complex
    -> q_nope: (batch, seq, heads, qk_nope_head_dim), q_pe: (batch, seq, heads, qk_rope_head_dim),
       latent: (batch, seq, kv_lora_rank), k_pe: (batch, seq, qk_rope_head_dim)

    MLA's projections act token by token, so the batch is flattened into one long
    "sequence" whose i-th token gets the i-th rotation: rows at different positions need
    no special code in ``MLA.project_query`` / ``MLA.compress_kv``.
    """
    batch, seq, _ = x.shape
    tokens, rotations = x.reshape(1, batch * seq, -1), freqs_cis.reshape(batch * seq, -1)
    q_nope, q_pe = mla.project_query(tokens, rotations)
    latent, k_pe = mla.compress_kv(tokens, rotations)
    return tuple(t.reshape(batch, seq, *t.shape[2:]) for t in (q_nope, q_pe, latent, k_pe))


def masked_softmax(scores: torch.Tensor, visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax over the last axis in float32, hidden slots at -inf, cast back to ``dtype``."""
    return scores.float().masked_fill(~visible, float("-inf")).softmax(dim=-1).to(dtype)


# --8<-- [start:per_head]
def per_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                       scale: float) -> torch.Tensor:
    """Ordinary attention over a per-head cache (the naive path).

    q: (batch, seq, heads, qk_head_dim); k: (batch, heads, length, qk_head_dim);
    v: (batch, heads, length, v_head_dim); mask: (batch, seq, length) bool
    -> (batch, seq, heads, v_head_dim)
    """
    scores = torch.matmul(q.transpose(1, 2), k.transpose(2, 3)) * scale  # (batch, heads, seq, length)
    probs = masked_softmax(scores, mask.unsqueeze(1), v.dtype)
    return torch.matmul(probs, v).transpose(1, 2)
# --8<-- [end:per_head]


def split_wkv_b(mla: MLA) -> tuple[torch.Tensor, torch.Tensor]:
    """``wkv_b`` per head: W_UK (heads, qk_nope_head_dim, kv_lora_rank), W_UV (heads, v_head_dim, kv_lora_rank).

    The rows of ``wkv_b`` (hub ``kv_b_proj``) are per head [k_nope | v]. A weight stored in FP8 (an FP8
    checkpoint, ``to_fp8(fp8_weights=True)``) is dequantised first, as the official ``absorb`` path does.
    """
    weight = mla.wkv_b.weight
    if getattr(mla.wkv_b, "stores_fp8", False):
        weight = dequantize_blockwise(weight, mla.wkv_b.scale).to(mla.kv_norm.weight.dtype)
    weight = weight.view(mla.n_heads, mla.qk_nope_head_dim + mla.v_head_dim, mla.kv_lora_rank)
    return weight[:, :mla.qk_nope_head_dim], weight[:, mla.qk_nope_head_dim:]


# --8<-- [start:absorbed]
def absorbed_scores(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                    w_uk: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention scores straight from the latent cache: (W_UK^T q_nope) . c_t + q_pe . k_pe_t, scaled.

    q_nope: (batch, seq, heads, qk_nope_head_dim); q_pe: (batch, seq, heads, qk_rope_head_dim);
    latent: (batch, length, kv_lora_rank); k_pe: (batch, length, qk_rope_head_dim);
    w_uk: (heads, qk_nope_head_dim, kv_lora_rank) -> (batch, seq, heads, length)

    The scale stays 1/sqrt(qk_head_dim) (times YaRN's m^2): the dot products are the
    same numbers as with expanded keys, only computed in another order.
    """
    batch, seq, heads, _ = q_nope.shape
    q_latent = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)  # each head's query, moved into latent space
    # One cached key per token for all heads (MQA): fold the heads into the query axis, one matmul each.
    scores = (q_latent.flatten(1, 2) @ latent.transpose(1, 2)
              + q_pe.flatten(1, 2) @ k_pe.transpose(1, 2))  # (batch, seq * heads, length)
    return scores.unflatten(1, (seq, heads)) * scale


def absorbed_attention(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                       mla: MLA, mask: torch.Tensor) -> torch.Tensor:
    """MLA attention over the latent cache, which is never expanded (the absorbed path).

    Shapes as in ``absorbed_scores``; mask: (batch, seq, length) bool -> (batch, seq, heads, v_head_dim)
    """
    w_uk, w_uv = split_wkv_b(mla)
    scores = absorbed_scores(q_nope, q_pe, latent, k_pe, w_uk, mla.softmax_scale)
    probs = masked_softmax(scores, mask.unsqueeze(2), latent.dtype)  # (batch, seq, heads, length)
    latent_out = probs.flatten(1, 2) @ latent  # sum_t p_t c_t: (batch, seq * heads, kv_lora_rank)
    return torch.einsum("bshc,hdc->bshd", latent_out.unflatten(1, probs.shape[1:3]), w_uv)  # W_UV, once
# --8<-- [end:absorbed]


def reexpanded_attention(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                         mla: MLA, mask: torch.Tensor) -> torch.Tensor:
    """The trap: keep the small latent cache but expand all of it through ``wkv_b`` at every step.

    Shapes as in ``absorbed_attention``. Same result, n_heads x (qk_nope + v) x kv_lora_rank
    multiply-adds per cached token per step.
    """
    k, v = mla.expand_kv(latent, k_pe)  # (batch, length, heads, ...)
    q = torch.cat([q_nope, q_pe], dim=-1)
    return per_head_attention(q, k.transpose(1, 2), v.transpose(1, 2), mask, mla.softmax_scale)


class LayerCache:
    """Preallocated cache of one attention layer: ``max_batch_size`` rows of ``max_seq_len`` slots.

    ``buffers`` names its tensors; ``attention`` is MLA's forward for new tokens, reading and extending them.
    """

    buffers: dict[str, torch.Tensor]

    def store(self, positions: torch.Tensor, **values: torch.Tensor) -> None:
        """Write each new token's values at its position. positions: (batch, seq); values: (batch, seq, ...)"""
        rows = torch.arange(positions.size(0), device=positions.device).unsqueeze(1)
        for name, value in values.items():
            self.slots(name)[rows, positions] = value

    def slots(self, name: str) -> torch.Tensor:
        """Buffer ``name`` seen as (batch, seq, ...), the layout ``store`` writes in."""
        return self.buffers[name]

    @property
    def nbytes(self) -> int:
        return sum(buffer.nbytes for buffer in self.buffers.values())

    def attention(self, mla: MLA, x: torch.Tensor, freqs_cis: torch.Tensor, positions: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """MLA.forward for new tokens, reading and extending this cache.

        x: (batch, seq, dim) normalised input; freqs_cis: (batch, seq, qk_rope_head_dim/2);
        positions: (batch, seq); mask: (batch, seq, length) from ``causal_mask`` -> (batch, seq, dim)
        """
        raise NotImplementedError


class PerHeadCache(LayerCache):
    """The naive cache: every head's key and value, (batch, heads, seq, head_dim) like transformers'.

    Heads before positions, so one head's cached keys are contiguous and the attention matmuls
    read the cache in place.
    """

    def __init__(self, config: ModelConfig, max_batch_size: int, max_seq_len: int,
                 dtype: torch.dtype, device: torch.device | str | None):
        shape = (max_batch_size, config.n_heads, max_seq_len)
        self.k = torch.zeros(*shape, config.qk_head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(*shape, config.v_head_dim, dtype=dtype, device=device)
        self.buffers = {"k": self.k, "v": self.v}

    def slots(self, name: str) -> torch.Tensor:
        return self.buffers[name].transpose(1, 2)  # (batch, seq, heads, head_dim), a view

    def attention(self, mla, x, freqs_cis, positions, mask):
        q_nope, q_pe, latent, k_pe = project(mla, x, freqs_cis)
        k, v = mla.expand_kv(latent, k_pe)  # expanded once, for the new tokens only
        self.store(positions, k=k, v=v)
        batch, length = x.size(0), mask.size(-1)
        q = torch.cat([q_nope, q_pe], dim=-1)
        o = per_head_attention(q, self.k[:batch, :, :length], self.v[:batch, :, :length], mask, mla.softmax_scale)
        return mla.wo(o.flatten(2))


class LatentCache(LayerCache):
    """The absorbed cache: kv_norm(c_KV) and the rotated k_pe, kv_lora_rank + qk_rope_head_dim per token."""

    def __init__(self, config: ModelConfig, max_batch_size: int, max_seq_len: int,
                 dtype: torch.dtype, device: torch.device | str | None, reexpand: bool = False):
        self.latent = torch.zeros(max_batch_size, max_seq_len, config.kv_lora_rank, dtype=dtype, device=device)
        self.k_pe = torch.zeros(max_batch_size, max_seq_len, config.qk_rope_head_dim, dtype=dtype, device=device)
        self.buffers = {"latent": self.latent, "k_pe": self.k_pe}
        self.attend = reexpanded_attention if reexpand else absorbed_attention

    def attention(self, mla, x, freqs_cis, positions, mask):
        q_nope, q_pe, latent, k_pe = project(mla, x, freqs_cis)
        self.store(positions, latent=latent, k_pe=k_pe)
        batch, length = x.size(0), mask.size(-1)
        o = self.attend(q_nope, q_pe, self.latent[:batch, :length], self.k_pe[:batch, :length], mla, mask)
        return mla.wo(o.flatten(2))


def make_layer_cache(kind: str, config: ModelConfig, max_batch_size: int, max_seq_len: int,
                     dtype: torch.dtype, device: torch.device | str | None) -> LayerCache:
    """``kind``: "absorbed", "naive", or "reexpanded" (the trap, for the benchmark)."""
    if config.has_indexer:  # DeepSeek-V3.2: the same cache plus the indexer's keys (sparse_attention.py)
        from .sparse_attention import IndexedCache
        inner = make_layer_cache(kind, dataclasses.replace(config, index_n_heads=0), max_batch_size, max_seq_len,
                                 dtype, device)
        return IndexedCache(inner, config, max_batch_size, max_seq_len, dtype, device)
    if kind == "naive":
        return PerHeadCache(config, max_batch_size, max_seq_len, dtype, device)
    if kind in ("absorbed", "reexpanded"):
        return LatentCache(config, max_batch_size, max_seq_len, dtype, device, reexpand=kind == "reexpanded")
    raise ValueError(f"cache must be one of {CACHE_KINDS}, got {kind!r}")


class KVCache:
    """The caches of a whole model: one per layer, plus one per MTP module for speculative decoding.

    Preallocated for ``max_batch_size`` x ``max_seq_len`` (default: the config's), in ``dtype``.
    """

    def __init__(self, config: ModelConfig, kind: str = "absorbed", max_batch_size: int | None = None,
                 max_seq_len: int | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, mtp_layers: int = 0):
        self.kind = kind
        self.max_batch_size = max_batch_size or config.max_batch_size
        self.max_seq_len = max_seq_len or config.max_seq_len

        def make() -> LayerCache:
            return make_layer_cache(kind, config, self.max_batch_size, self.max_seq_len, dtype, device)

        self.layers = [make() for _ in range(config.n_layers)]
        self.mtp = [make() for _ in range(mtp_layers)]

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers + self.mtp)

    def positions(self, start: torch.Tensor, seq: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of ``seq`` new tokens per row, starting at ``start`` (batch,), and their causal mask.

        Returns positions: (batch, seq) and mask: (batch, seq, length) on ``device``, where
        length = the last new position + 1 (the cache slots this step reads).
        """
        batch, end = start.numel(), int(start.max()) + seq
        if batch > self.max_batch_size:
            raise ValueError(f"batch of {batch} sequences exceeds the cache's max_batch_size={self.max_batch_size}")
        if int(start.min()) < 0:
            raise ValueError(f"cache positions must be >= 0, got start={start.tolist()}")
        if end > self.max_seq_len:
            raise ValueError(f"tokens up to position {end - 1} do not fit: the cache holds max_seq_len="
                             f"{self.max_seq_len} positions per sequence")
        positions = (start.view(-1, 1) + torch.arange(seq)).to(device)
        return positions, causal_mask(positions, end)


def block_step(block: Block, cache: LayerCache, x: torch.Tensor, freqs_cis: torch.Tensor,
               positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Block.forward`` with the attention reading the cache. x: (batch, seq, dim) -> (batch, seq, dim)"""
    h = x + cache.attention(block.attn, block.attn_norm(x), freqs_cis, positions, mask)
    return h + block.ffn(block.ffn_norm(h))


def forward_step(model: nn.Module, cache: KVCache, tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Run new tokens through the main model, each row's tokens at positions start[b], start[b] + 1, ...

    tokens: (batch, seq) int64; start: (batch,) int64 on the CPU
    -> hidden states before the final norm: (batch, seq, dim) (``Transformer.forward_hidden``'s output)
    """
    positions, mask = cache.positions(start, tokens.size(1), tokens.device)
    freqs_cis = model.freqs_cis(mask.size(-1), tokens.device)[positions]
    h = model.embed(tokens)
    for block, layer_cache in zip(model.layers, cache.layers):
        h = block_step(block, layer_cache, h, freqs_cis, positions, mask)
    return h


def mtp_step(model: nn.Module, cache: KVCache, h: torch.Tensor, next_tokens: torch.Tensor,
             start: torch.Tensor, depth: int = 0) -> torch.Tensor:
    """``MTPModule.forward`` of MTP module ``depth`` with a cache: position i combines h_i and token i+1+depth.

    h: (batch, seq, dim) previous depth's hidden states; next_tokens: (batch, seq); start: (batch,)
    -> (batch, seq, dim); the module's predictions are ``model.head(module.norm(...))``.
    """
    module = model.mtp[depth]
    positions, mask = cache.positions(start, h.size(1), h.device)
    freqs_cis = model.freqs_cis(mask.size(-1), h.device)[positions]
    combined = module.eh_proj(torch.cat([module.enorm(model.embed(next_tokens)), module.hnorm(h)], dim=-1))
    return block_step(module.block, cache.mtp[depth], combined, freqs_cis, positions, mask)


def kv_values_per_token(config: ModelConfig, gqa_kv_heads: int = 8) -> dict[str, int]:
    """Values cached per token per layer by each scheme, at ``config``'s width (V3 numbers in brackets).

    MLA latent [576]; MLA's per-head cache [40,960]; and what a standard attention with
    ``v_head_dim``-wide heads (128) and the same number of query heads would cache:
    MHA [32,768], GQA with ``gqa_kv_heads`` key/value heads [2,048], MQA [256].
    """
    head = config.v_head_dim
    return {
        "MLA latent (absorbed)": config.kv_lora_rank + config.qk_rope_head_dim,
        "MLA per-head (naive)": config.n_heads * (config.qk_head_dim + config.v_head_dim),
        "MHA": 2 * config.n_heads * head,
        f"GQA ({gqa_kv_heads} KV heads)": 2 * gqa_kv_heads * head,
        "MQA": 2 * head,
    }
