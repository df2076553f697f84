"""Dropped keys get a score of 0 instead of -inf: they keep softmax weight, so the attention is not sparse.

Caught by: test_sparse_attention_against_loops
"""

import torch

from _reference import use_solution

use_solution("14", globals())


def sparse_attention(q, k, v, keep, scale):
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * scale
    probs = scores.masked_fill(~keep.unsqueeze(1), 0.0).softmax(dim=-1)
    return torch.einsum("bhts,bshd->bthd", probs, v.float()).to(v.dtype)
