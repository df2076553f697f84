"""DeepSeek Sparse Attention (DSA): the lightning indexer and MLA restricted to the keys it selects.

DeepSeek-V3.2 keeps all of V3 and adds one module to every attention layer. For each query
token t, a small **lightning indexer** scores every earlier token s (V3.2 report, eq. 1):

    I_{t,s} = sum_j  w_{t,j} * ReLU(q_{t,j} . k_s)            j = 1 .. index_n_heads (64)

with ``index_n_heads`` query heads q_{t,j} of width ``index_head_dim`` (128), ONE key k_s per
token shared by all heads, and a per-head weight w_{t,j} computed from the token itself. MLA then
attends only to the ``index_topk`` (2,048) tokens with the largest I_{t,s} (eq. 2): the main
attention costs O(L k) instead of O(L^2), while the indexer itself stays O(L^2) but is far
cheaper per pair (one 128-wide dot product per head, run in FP8 by the official code, against
MLA's 128 heads of 192 + 128 dims).

Data flow of one indexer (official names of ``inference/model.py``; the hub calls the module
``self_attn.indexer`` and keeps these names):

    queries:  q = wq_b(c_Q)  per head [q_pe | q_nope]      c_Q = q_norm(wq_a(x)), MLA's query latent
    key:      k = k_norm(wk(x))          [k_pe | k_nope]   one LayerNorm (with bias), float32
    RoPE:     the first qk_rope_head_dim dims of q and k, **half-split** pairs (i, i + r/2)
    weights:  w = weights_proj(x) * index_n_heads^-0.5
    scores:   I = sum_j w_j * ReLU(q_j . k * index_head_dim^-0.5)
    select:   the top index_topk of I among the visible (causal) tokens

Two layout details differ from MLA and are easy to get wrong when porting:

* the rotated slice comes **first** in the indexer's head ([pe | nope]) and last in MLA's;
* the indexer rotates **half-split** pairs (dims i and i + r/2, transformers' ``rotate_half``),
  while MLA rotates interleaved pairs (2i, 2i+1). The official code rotated interleaved pairs in
  the indexer too until it was corrected to half-split in November 2025; the released weights were
  trained with half-split pairs, so copies of the older code select other tokens. ``rope_layout``
  keeps the wrong one available for the test and the lesson that show it.

The official code also multiplies q and k by a normalised Hadamard matrix (``rotate_activation``)
and scores them in FP8 (``fp8_index``): the rotation is orthogonal, so exact arithmetic would give
the same scores, but it spreads outlier channels over all 128 dims before each vector is quantised
with one scale. ``fp8_index_scores`` simulates that path exactly (``Indexer.fp8 = True`` uses it).

``sparse_mla_forward`` is MLA's forward when it has an indexer (``MLA.forward`` calls it); the
cached decode paths are in ``sparse_attention.py``, the two training stages in ``dsa_train.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .fp8 import quantize_activations
from .rope import apply_rotary_emb

ROPE_LAYOUTS = ("half", "interleaved")


# --8<-- [start:rope_half]
def apply_rotary_emb_half(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate half-split pairs (x[i], x[i + r/2]) of the last dimension: the indexer's layout.

    x: (batch, seq, heads, r); freqs_cis: (seq, r/2) or (batch, seq, r/2) complex -> x's shape and dtype.
    The same frequencies as MLA's interleaved rotation, only paired differently.
    """
    half = x.size(-1) // 2
    pairs = torch.complex(x[..., :half].float(), x[..., half:].float())  # (b, s, h, r/2)
    rotated = pairs * freqs_cis.unsqueeze(-2)  # one rotation per token, shared by the heads
    return torch.cat([rotated.real, rotated.imag], dim=-1).to(x.dtype)
# --8<-- [end:rope_half]


def _rotate(x: torch.Tensor, freqs_cis: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "half":
        return apply_rotary_emb_half(x, freqs_cis)
    if layout == "interleaved":  # the pre-November-2025 official code: wrong for the released weights
        if freqs_cis.dim() == 3:  # per-row positions: flatten the batch into one sequence
            b, s = x.shape[:2]
            return apply_rotary_emb(x.reshape(1, b * s, *x.shape[2:]), freqs_cis.reshape(b * s, -1)).view_as(x)
        return apply_rotary_emb(x, freqs_cis)
    raise ValueError(f"rope_layout must be one of {ROPE_LAYOUTS}, got {layout!r}")


# --8<-- [start:index_scores]
def index_scores(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """The lightning indexer's scores I_{t,s} = sum_j w_{t,j} ReLU(scale * q_{t,j} . k_s) (V3.2 report eq. 1).

    q: (batch, seq, heads, index_head_dim); k: (batch, length, index_head_dim), one key per token;
    weights: (batch, seq, heads) -> (batch, seq, length) float32. ``scale`` = index_head_dim^-0.5.
    """
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2).unsqueeze(1)) * scale  # (b, s, heads, length)
    return torch.matmul(weights.float().unsqueeze(-2), F.relu(logits)).squeeze(-2)  # weighted sum over heads
# --8<-- [end:index_scores]


# --8<-- [start:topk_mask]
def topk_mask(scores: torch.Tensor, visible: torch.Tensor, topk: int) -> torch.Tensor:
    """Which keys each query attends to: its ``topk`` best-scored visible keys (all of them if fewer).

    scores: (batch, seq, length); visible: broadcastable to it, bool (the causal mask) -> (batch, seq, length) bool.
    Hidden keys are scored -inf before the top-k, and the result is intersected with ``visible`` again:
    a query with fewer than ``topk`` visible keys "selects" some hidden ones, which must stay hidden.
    """
    topk = min(topk, scores.size(-1))
    chosen = scores.masked_fill(~visible, float("-inf")).topk(topk, dim=-1).indices
    selected = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device).scatter_(-1, chosen, True)
    return selected & visible
# --8<-- [end:topk_mask]


def hadamard_matrix(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised Sylvester-Hadamard matrix H / sqrt(n) (n a power of two): orthogonal and symmetric,
    the matrix ``fast_hadamard_transform.hadamard_transform(x, scale=n**-0.5)`` multiplies by."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Hadamard rotation needs a power-of-two width, got {n}")
    h = torch.ones(1, 1, device=device)
    while h.size(0) < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n ** 0.5


# --8<-- [start:fp8_index]
def fp8_index_scores(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, scale: float,
                     scale_fmt: str | None = None) -> torch.Tensor:
    """``index_scores`` as the official code computes it: Hadamard rotation, FP8 E4M3 operands, FP32 sums.

    Shapes as in ``index_scores``. q and k are rotated by the normalised Hadamard matrix (dot products
    unchanged), then quantised with one scale per token (per head for q) over their index_head_dim
    channels (``act_quant``, 1 x 128 tiles at V3.2's width). The kernel ``fp8_index`` then computes
    sum_j ReLU(q8_j . k8) * (w_j * scale * s_q,j) and multiplies the sum by the key's scale s_k.
    The products of E4M3 values are exact in FP32, so this simulation gives the kernel's numbers up to
    the order of the FP32 additions.
    """
    d = q.size(-1)
    h = hadamard_matrix(d, q.device)
    q8, q_scale = quantize_activations(q.float() @ h, group=d, scale_fmt=scale_fmt)  # scale: (b, s, heads, 1)
    k8, k_scale = quantize_activations(k.float() @ h, group=d, scale_fmt=scale_fmt)  # scale: (b, length, 1)
    logits = torch.matmul(q8.float(), k8.float().transpose(-1, -2).unsqueeze(1))  # (b, s, heads, length)
    w = weights.float() * scale * q_scale.squeeze(-1)  # (b, s, heads)
    summed = torch.matmul(w.unsqueeze(-2), F.relu(logits)).squeeze(-2)  # (b, s, length)
    return summed * k_scale.squeeze(-1).unsqueeze(1)
# --8<-- [end:fp8_index]


class Indexer(nn.Module):
    """The lightning indexer of one attention layer (official ``Indexer``; hub ``self_attn.indexer``).

    forward(x: (batch, seq, dim), qr: (batch, seq, q_lora_rank) MLA's query latent,
    freqs_cis: (seq, qk_rope_head_dim/2) complex) -> index scores (batch, seq, seq) float32, unmasked.

    Switches (plain attributes): ``mode`` "sparse" (V3.2) or "dense" (attend to every visible key:
    V3, the warm-up stage); ``rope_layout`` "half" (correct) or "interleaved" (the porting trap);
    ``fp8`` scores through ``fp8_index_scores``; ``record`` None, or a dict that ``sparse_mla_forward``
    fills with this layer's scores and attention for the training stages (``dsa_train.py``).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.index_n_heads
        self.head_dim = config.index_head_dim
        self.rope_head_dim = config.qk_rope_head_dim
        self.index_topk = config.index_topk
        self.softmax_scale = self.head_dim ** -0.5
        self.scale_fmt = config.scale_fmt
        # --8<-- [start:indexer_weights]
        self.wq_b = nn.Linear(config.q_lora_rank, self.n_heads * self.head_dim, bias=False)  # FP8 in the release
        self.wk = nn.Linear(config.dim, self.head_dim, bias=False)  # FP8 in the release
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)  # weight and bias, float32 in the release
        self.weights_proj = nn.Linear(config.dim, self.n_heads, bias=False)  # BF16 in the release
        # --8<-- [end:indexer_weights]
        self.mode = "sparse"
        self.rope_layout = "half"
        self.fp8 = False
        self.record: dict | None = None

    # --8<-- [start:indexer_forward]
    def queries(self, qr: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        """qr: (batch, seq, q_lora_rank) -> (batch, seq, index_n_heads, index_head_dim), [pe | nope], pe rotated."""
        q = self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim))
        q_pe, q_nope = q.split([self.rope_head_dim, self.head_dim - self.rope_head_dim], dim=-1)
        return torch.cat([_rotate(q_pe, freqs_cis, self.rope_layout), q_nope], dim=-1)

    def keys(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, dim) -> the one key per token (batch, seq, index_head_dim), LayerNorm in float32."""
        k = F.layer_norm(self.wk(x).float(), (self.head_dim,), self.k_norm.weight.float(),
                         self.k_norm.bias.float(), self.k_norm.eps).to(x.dtype)
        k_pe, k_nope = k.split([self.rope_head_dim, self.head_dim - self.rope_head_dim], dim=-1)
        return torch.cat([_rotate(k_pe.unsqueeze(2), freqs_cis, self.rope_layout).squeeze(2), k_nope], dim=-1)

    def head_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, seq, dim) -> w: (batch, seq, index_n_heads) float32, already times index_n_heads^-0.5."""
        return F.linear(x.float(), self.weights_proj.weight.float()) * self.n_heads ** -0.5

    def score(self, q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """I_{t,s} from queries, keys (possibly cached) and weights: (batch, seq, length) float32."""
        if self.fp8:
            return fp8_index_scores(q, k, weights, self.softmax_scale, self.scale_fmt)
        return index_scores(q, k, weights, self.softmax_scale)

    def forward(self, x: torch.Tensor, qr: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        return self.score(self.queries(qr, freqs_cis), self.keys(x, freqs_cis), self.head_weights(x))
    # --8<-- [end:indexer_forward]


# --8<-- [start:sparse_mla_forward]
def sparse_mla_forward(mla: nn.Module, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """``MLA.forward`` of a V3.2 layer: the queries, keys and values of V3's MLA, attending only to the keys
    the indexer selects among the causal ones (official ``MLA.forward`` prefill branch).

    x: (batch, seq, dim); freqs_cis: (seq, qk_rope_head_dim/2) complex -> (batch, seq, dim).
    The indexer reads x and the query latent *detached* (V3.2 report, section 2.1.1): its only training
    signal is its own KL loss, and that loss does not reach the main model.
    """
    indexer, seq = mla.indexer, x.size(1)
    qr = mla.q_norm(mla.wq_a(x))  # the query latent c_Q, shared by MLA and its indexer
    q = mla.wq_b(qr).unflatten(-1, (mla.n_heads, mla.qk_head_dim))
    q_nope, q_pe = q.split([mla.qk_nope_head_dim, mla.qk_rope_head_dim], dim=-1)
    q = torch.cat([q_nope, apply_rotary_emb(q_pe, freqs_cis)], dim=-1)  # (b, s, h, qk_head_dim)
    k, v = mla.expand_kv(*mla.compress_kv(x, freqs_cis))

    causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
    scores_index = indexer(x.detach(), qr.detach(), freqs_cis)  # (b, s, s)
    selected = topk_mask(scores_index, causal, indexer.index_topk)
    visible = selected if indexer.mode == "sparse" else causal.expand_as(selected)

    if mla.backend == "eager" or indexer.record is not None:
        scores = torch.einsum("bshd,bthd->bhst", q, k).float() * mla.softmax_scale
        probs = scores.masked_fill(~visible.unsqueeze(1), float("-inf")).softmax(dim=-1)
        if indexer.record is not None:
            indexer.record.update(index=scores_index, selected=selected, causal=causal,
                                  attention=probs.detach().mean(dim=1))  # summed over heads, L1-normalised
        o = torch.einsum("bhst,bthd->bshd", probs.to(v.dtype), v)
    else:  # PyTorch's fused kernel with the selection as a boolean mask (True = attend)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=visible.unsqueeze(1), scale=mla.softmax_scale).transpose(1, 2)
    return mla.wo(o.flatten(2))
# --8<-- [end:sparse_mla_forward]
