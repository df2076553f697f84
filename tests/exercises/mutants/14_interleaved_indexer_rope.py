"""The indexer rotates interleaved pairs (2i, 2i+1), MLA's layout, instead of half-split pairs (i, i + r/2):
the official code did this until its November 2025 fix, and it selects other keys with the released weights.

Caught by: test_rotate_half_split_pairs_i_with_i_plus_half
"""

import torch

from _reference import use_solution

use_solution("14", globals())


def rotate_half_split(x, freqs_cis):
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    rotated = pairs * freqs_cis.view(1, freqs_cis.size(0), 1, -1)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
