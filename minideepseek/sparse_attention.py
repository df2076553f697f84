"""DeepSeek Sparse Attention at inference: the indexer's key cache, O(k) decoding, and what it costs.

**The cache.** A V3.2 layer caches what a V3 layer caches (the latent and ``k_pe``, or the per-head
keys and values) plus the indexer's key: ``index_head_dim`` (128) values per token per layer, FP8
with one scale in the official code. ``IndexedCache`` wraps either V3 cache: for the new tokens it
computes the indexer's queries and keys, stores the keys, scores the queries against every cached
key, keeps the top ``index_topk`` of the visible ones and hands the V3 cache a mask narrowed to
them. Nothing else changes, so ``generate`` with ``cache="naive"`` or ``"absorbed"`` gives the
tokens of the full forward pass (``tests/test_sparse_attention.py``).

**O(k) attention.** A mask still reads every cached token. The sparse kernels of V3.2 (FlashMLA's
sparse decode) instead *gather* the k selected latent rows and run MLA's absorbed (MQA) form on them
alone: ``sparse_absorbed_attention``. The main attention then reads k rows whatever the context
length; only the indexer reads all L keys, with 64 heads of 128 dims in FP8 instead of 128 heads of
576 + 512.

**Cost.** ``attention_flops`` counts, per query token and per layer, the multiply-adds of the main
attention (dense or over k keys) and of the indexer at a config's dimensions; ``crossover`` solves
for the context length above which the sparse layer (indexer + k keys) is cheaper than the dense one;
``time_decode_step`` measures the same on this machine at small dimensions.
"""

from __future__ import annotations

import time

import torch

from .attention import MLA
from .config import ModelConfig
from .indexer import index_scores, topk_mask
from .kv_cache import LayerCache, absorbed_attention, masked_softmax, split_wkv_b


class IndexedCache(LayerCache):
    """A V3 layer cache (``inner``: ``PerHeadCache`` or ``LatentCache``) plus the indexer's keys.

    ``index_k``: (max_batch_size, max_seq_len, index_head_dim). ``attention`` as ``LayerCache.attention``.
    """

    def __init__(self, inner: LayerCache, config: ModelConfig, max_batch_size: int, max_seq_len: int,
                 dtype: torch.dtype, device: torch.device | str | None):
        self.inner = inner
        self.index_k = torch.zeros(max_batch_size, max_seq_len, config.index_head_dim, dtype=dtype, device=device)
        self.buffers = {**inner.buffers, "index_k": self.index_k}

    # --8<-- [start:indexed_cache]
    def attention(self, mla, x, freqs_cis, positions, mask):
        """x: (batch, seq, dim); freqs_cis: (batch, seq, rope/2); positions: (batch, seq); mask: (batch, seq, length)."""
        indexer = mla.indexer
        qr = mla.q_norm(mla.wq_a(x))
        self.store(positions, index_k=indexer.keys(x, freqs_cis))  # the new tokens' indexer keys
        if indexer.mode == "sparse":
            batch, length = x.size(0), mask.size(-1)
            scores = indexer.score(indexer.queries(qr, freqs_cis), self.index_k[:batch, :length],
                                   indexer.head_weights(x))  # (batch, seq, length): every cached token
            mask = topk_mask(scores, mask, indexer.index_topk)  # visible AND among the top-k
        return self.inner.attention(mla, x, freqs_cis, positions, mask)
    # --8<-- [end:indexed_cache]


# --8<-- [start:sparse_absorbed]
def sparse_absorbed_attention(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                              mla, indices: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MLA's absorbed attention over the k gathered latent rows of each query: O(k), not O(length).

    q_nope: (batch, seq, heads, qk_nope_head_dim); q_pe: (batch, seq, heads, qk_rope_head_dim);
    latent: (batch, length, kv_lora_rank); k_pe: (batch, length, qk_rope_head_dim);
    indices: (batch, seq, k) int64 the selected slots; valid: (batch, seq, k) bool (False: a slot chosen only
    because fewer than k were visible) -> (batch, seq, heads, v_head_dim)
    """
    w_uk, w_uv = split_wkv_b(mla)
    batch, seq, k = indices.shape
    rows = torch.arange(batch, device=indices.device).view(batch, 1, 1)
    c, pe = latent[rows, indices], k_pe[rows, indices]  # (batch, seq, k, kv_lora_rank), (batch, seq, k, rope)
    q_latent = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)
    scores = (torch.einsum("bshc,bskc->bshk", q_latent, c)
              + torch.einsum("bshr,bskr->bshk", q_pe, pe)) * mla.softmax_scale
    probs = masked_softmax(scores, valid.unsqueeze(2), latent.dtype)  # (batch, seq, heads, k)
    return torch.einsum("bshc,hdc->bshd", torch.einsum("bshk,bskc->bshc", probs, c), w_uv)
# --8<-- [end:sparse_absorbed]


# ------------------------------------------------------------------------------------------- cost
# --8<-- [start:flops]
def attention_flops(config: ModelConfig, length: int | torch.Tensor) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one query token attending over ``length`` earlier tokens, in one layer.

    dense MHA: the per-head form (keys and values expanded, V3's prefill): 2 h (qk_head_dim + v_head_dim) per key;
    dense MQA: the absorbed form over the latent (V3's decode, V3.2's sparse kernels): 2 h (2 kv_lora_rank +
    qk_rope_head_dim) per key; indexer: 2 index_n_heads (index_head_dim + 1) per key (dot products, then the
    ReLU-weighted sum); sparse: the indexer over all keys + the MQA form over min(length, index_topk) keys.
    The per-token projections (the same with or without DSA, except the indexer's 2 x 13.96M) are left out.
    """
    c = config
    per_key_mha = 2 * c.n_heads * (c.qk_head_dim + c.v_head_dim)
    per_key_mqa = 2 * c.n_heads * (2 * c.kv_lora_rank + c.qk_rope_head_dim)
    per_key_indexer = 2 * c.index_n_heads * (c.index_head_dim + 1)
    length = torch.as_tensor(length, dtype=torch.float64)
    selected = length.clamp(max=c.index_topk)
    return {"dense MHA": per_key_mha * length, "dense MQA": per_key_mqa * length,
            "indexer": per_key_indexer * length,
            "sparse (indexer + top-k MQA)": per_key_indexer * length + per_key_mqa * selected}
# --8<-- [end:flops]


def crossover(config: ModelConfig, dense: str = "dense MQA") -> float:
    """The context length above which the sparse layer costs fewer FLOPs than ``dense`` (from ``attention_flops``).

    With per-key costs a (dense), b (indexer) and the MQA form's m over k = index_topk keys, L a = L b + k m
    gives L = k m / (a - b); inf when the indexer alone costs as much as the dense attention.
    """
    a, b, m = (float(attention_flops(config, 1)[name]) for name in (dense, "indexer", "dense MQA"))
    return config.index_topk * m / (a - b) if a > b else float("inf")


def time_decode_step(config: ModelConfig, length: int, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Measured seconds of one decode step's attention (batch 1, one layer) over ``length`` cached tokens.

    "dense": absorbed MLA over every cached latent; "sparse": indexer scores over every cached key, top-k, and
    absorbed MLA over the k gathered rows (``sparse_absorbed_attention``); "indexer": the scores and top-k alone.
    Best of ``repeats``. Random weights and caches: the cost does not depend on the values.
    """
    torch.manual_seed(seed)
    mla = MLA(config).eval()
    indexer = mla.indexer
    c = config
    q_nope, q_pe = torch.randn(1, 1, c.n_heads, c.qk_nope_head_dim), torch.randn(1, 1, c.n_heads, c.qk_rope_head_dim)
    latent, k_pe = torch.randn(1, length, c.kv_lora_rank), torch.randn(1, length, c.qk_rope_head_dim)
    q_index, k_index = torch.randn(1, 1, c.index_n_heads, c.index_head_dim), torch.randn(1, length, c.index_head_dim)
    weights = torch.randn(1, 1, c.index_n_heads)
    visible = torch.ones(1, 1, length, dtype=torch.bool)

    def dense():
        return absorbed_attention(q_nope, q_pe, latent, k_pe, mla, visible)

    def select():
        scores = index_scores(q_index, k_index, weights, indexer.softmax_scale)
        return scores.topk(min(c.index_topk, length), dim=-1).indices

    def sparse():
        indices = select()
        return sparse_absorbed_attention(q_nope, q_pe, latent, k_pe, mla, indices, torch.ones_like(indices, dtype=torch.bool))

    times = {}
    with torch.inference_mode():
        for name, step in (("dense", dense), ("sparse", sparse), ("indexer", select)):
            step()  # warm-up
            best = float("inf")
            for _ in range(repeats):
                began = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - began)
            times[name] = best
    return times
