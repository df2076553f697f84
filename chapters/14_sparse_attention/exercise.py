"""Chapter 14 exercise: the lightning indexer's scores and the top-k mask of DeepSeek Sparse Attention.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_14_sparse_attention.py --student

Equation numbers are those of the DeepSeek-V3.2 report (section 2.1). Shapes: ``batch`` sequences,
``seq`` queries, ``length`` keys (the cached tokens: length >= seq), ``heads`` indexer heads.
"""

import torch


def rotate_half_split(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """RoPE as the indexer applies it: dims i and i + r/2 form pair i (NOT MLA's interleaved 2i, 2i+1).

    x: (batch, seq, heads, r); freqs_cis: (seq, r/2) complex, exp(i * position * frequency_i).
    Pair i, as the complex number x[i] + 1j * x[i + r/2], is multiplied by freqs_cis[:, i]; the real parts
    go back to dims 0 .. r/2-1, the imaginary parts to r/2 .. r-1. Returns x's shape and dtype.
    """
    raise NotImplementedError("rotate_half_split: pair dim i with dim i + r/2, rotate, put the halves back")


def indexer_scores(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """The lightning indexer's scores (eq. 1): I[b, t, s] = sum_j weights[b, t, j] * ReLU(scale * q[b, t, j] . k[b, s]).

    q: (batch, seq, heads, d) the indexer's queries; k: (batch, length, d) ONE key per token, shared by the heads;
    weights: (batch, seq, heads) the per-head weights w_{t,j}; scale = d ** -0.5.
    Returns (batch, seq, length) float32 (compute in float32 whatever the inputs' dtype).
    """
    raise NotImplementedError("indexer_scores: per-head dot products, ReLU, then the weighted sum over heads")


def topk_mask(scores: torch.Tensor, visible: torch.Tensor, topk: int) -> torch.Tensor:
    """Which keys each query attends to (eq. 2): its ``topk`` highest-scored VISIBLE keys.

    scores: (batch, seq, length); visible: bool, broadcastable to scores (the causal mask: True = may attend);
    a query with at most ``topk`` visible keys keeps all of them, and never a hidden key.
    Returns (batch, seq, length) bool.
    """
    raise NotImplementedError("topk_mask: hide the invisible keys, take the top-k, scatter, keep only visible ones")


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Attention restricted to the selected keys: softmax over the kept keys only (the others get no weight).

    q: (batch, seq, heads, dq); k: (batch, length, heads, dq); v: (batch, length, heads, dv);
    keep: (batch, seq, length) bool from ``topk_mask``. Softmax in float32. Returns (batch, seq, heads, dv).
    """
    raise NotImplementedError("sparse_attention: scores, -inf where not kept, softmax, weighted sum of values")
