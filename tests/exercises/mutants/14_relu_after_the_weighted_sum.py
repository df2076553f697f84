"""The ReLU is applied once, to the weighted sum over heads, instead of to each head's dot product before it.

Caught by: test_indexer_scores_against_loops, test_indexer_scores_match_the_package_indexer
"""

import torch
import torch.nn.functional as F

from _reference import use_solution

use_solution("14", globals())


def indexer_scores(q, k, weights, scale):
    logits = torch.einsum("bthd,bsd->bths", q.float(), k.float()) * scale
    return F.relu(torch.einsum("bth,bths->bts", weights.float(), logits))
