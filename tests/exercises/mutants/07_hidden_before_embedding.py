"""The report's written order [h ; emb] instead of the released weights' [emb ; h].

Caught by: test_mtp_combine_is_eh_proj_of_normalised_embedding_then_hidden
"""

import torch

from _reference import use_solution

use_solution("07", globals())


def mtp_combine(h, next_embeddings, enorm_weight, hnorm_weight, eh_proj_weight, eps=1e-6):
    both = torch.cat([rms_norm(h, hnorm_weight, eps), rms_norm(next_embeddings, enorm_weight, eps)], dim=-1)
    return both @ eh_proj_weight.T
