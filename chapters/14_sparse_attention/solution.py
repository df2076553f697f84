"""Chapter 14 reference solutions (graded by tests/exercises/test_14_sparse_attention.py)."""

import torch
import torch.nn.functional as F


def rotate_half_split(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    pairs = torch.complex(x[..., :half].float(), x[..., half:].float())
    rotated = pairs * freqs_cis.view(1, freqs_cis.size(0), 1, half)
    return torch.cat([rotated.real, rotated.imag], dim=-1).to(x.dtype)


def indexer_scores(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    logits = torch.einsum("bthd,bsd->bths", q.float(), k.float()) * scale
    return torch.einsum("bth,bths->bts", weights.float(), F.relu(logits))


def topk_mask(scores: torch.Tensor, visible: torch.Tensor, topk: int) -> torch.Tensor:
    visible = visible.expand_as(scores)
    chosen = scores.masked_fill(~visible, float("-inf")).topk(min(topk, scores.size(-1)), dim=-1).indices
    return torch.zeros_like(visible).scatter(-1, chosen, True) & visible


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor,
                     scale: float) -> torch.Tensor:
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * scale
    probs = scores.masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(dim=-1)
    return torch.einsum("bhts,bshd->bthd", probs, v.float()).to(v.dtype)
