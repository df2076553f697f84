"""Chapter 03 exercise: Multi-head Latent Attention, written as plain functions.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_03_mla.py --student

Weights are passed in, in ``nn.Linear`` layout (out_features, in_features), under the
official names of ``minideepseek.attention.MLA`` without the ``.weight`` suffix:
``wq_a, q_norm, wq_b, wkv_a, kv_norm, wkv_b, wo``. Equation numbers are those of the
DeepSeek-V3 report, section 2.1.1.

You may use ``torch.nn.functional.rms_norm`` (chapter 01), and
``minideepseek.rope.apply_rotary_emb`` and ``minideepseek.rope.softmax_scale`` (chapter 02).
"""

import torch

from minideepseek.config import ModelConfig


def kv_cache_elements_per_token(config: ModelConfig, kind: str, n_kv_heads: int = 8) -> int:
    """Values one token leaves in the KV cache of ONE layer, for an attention of ``kind``.

    kind: "mha"  every one of the ``n_heads`` heads caches a key (qk_head_dim) and a value (v_head_dim);
          "gqa"  ``n_kv_heads`` key/value heads, each shared by a group of query heads;
          "mqa"  a single key/value head shared by all query heads;
          "mla"  the latent (kv_lora_rank) and the shared rotated key (qk_rope_head_dim).
    All kinds use ``config``'s head dimensions. DeepSeek-V3: mha 40,960, mla 576.
    Raise ValueError naming ``kind`` for any other kind.
    """
    raise NotImplementedError("kv_cache_elements_per_token: count what each attention kind caches")


def compress_kv(x: torch.Tensor, wkv_a: torch.Tensor, kv_norm: torch.Tensor, freqs_cis: torch.Tensor,
                config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """What MLA caches for each token (eq. 1 and 3).

    x: (batch, seq, dim); wkv_a: (kv_lora_rank + qk_rope_head_dim, dim); kv_norm: (kv_lora_rank,);
    freqs_cis: (seq, qk_rope_head_dim // 2) complex.
    Returns latent: (batch, seq, kv_lora_rank), the RMS-normalised first kv_lora_rank outputs of wkv_a,
    and k_pe: (batch, seq, qk_rope_head_dim), the last outputs, rotated by RoPE (one key shared by all heads).
    """
    raise NotImplementedError("compress_kv: project with wkv_a, split, normalise the latent, rotate k_pe")


def attention_scores_with_decoupled_rope(q_nope: torch.Tensor, q_pe: torch.Tensor, k_nope: torch.Tensor,
                                         k_pe: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention logits q_{t,i} . k_{j,i} * scale with k_{j,i} = [k_nope_{j,i} ; k_pe_j] (eq. 4, 9, 10).

    q_nope: (batch, seq_q, heads, nope); q_pe: (batch, seq_q, heads, rope);
    k_nope: (batch, seq_k, heads, nope); k_pe: (batch, seq_k, rope), the same for every head.
    Returns (batch, heads, seq_q, seq_k), before any mask or softmax.
    """
    raise NotImplementedError("attention_scores_with_decoupled_rope: the content part plus the position part")


def absorbed_attention_scores(q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                              wkv_b: torch.Tensor, scale: float, config: ModelConfig) -> torch.Tensor:
    """The same logits computed from the cache alone, never building per-head keys (the grader watches the
    shapes of the tensors you build: a head's keys for every cached token, in any layout, fails).

    Since k_nope_{j,i} = W^UK_i latent_j, the content part q_nope_i . k_nope_{j,i} equals
    (W^UK_i^T q_nope_i) . latent_j: fold ("absorb") head i's slice of wkv_b into its query.
    q_nope: (batch, seq_q, heads, nope); q_pe: (batch, seq_q, heads, rope);
    latent: (batch, seq_k, kv_lora_rank); k_pe: (batch, seq_k, rope);
    wkv_b: (heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank), rows per head [k_nope | v].
    Returns (batch, heads, seq_q, seq_k).
    """
    raise NotImplementedError("absorbed_attention_scores: absorb W^UK into the query, attend to the latent")


def mla_attention(x: torch.Tensor, weights: dict[str, torch.Tensor], freqs_cis: torch.Tensor,
                  config: ModelConfig) -> torch.Tensor:
    """Causal Multi-head Latent Attention over a whole sequence (eq. 1-11), low-rank query form.

    x: (batch, seq, dim); weights: {"wq_a", "q_norm", "wq_b", "wkv_a", "kv_norm", "wkv_b", "wo"};
    freqs_cis: (seq, qk_rope_head_dim // 2) complex. Returns (batch, seq, dim).
    Query per head [q_nope | q_pe] from wq_b(q_norm(wq_a x)), q_pe rotated; keys [k_nope | k_pe] and
    values from wkv_b(latent); a causal softmax with ``softmax_scale(config)``; then wo.
    """
    raise NotImplementedError("mla_attention: queries, compressed keys/values, causal softmax, output projection")
