"""The top-k is taken over every key's score, hidden ones included, and only then intersected with the causal
mask: future keys with high scores take slots, and queries keep fewer than k visible keys.

Caught by: test_topk_mask_keeps_the_best_visible_keys, test_whole_selection_matches_the_package_layer
"""

import torch

from _reference import use_solution

use_solution("14", globals())


def topk_mask(scores, visible, topk):
    chosen = scores.topk(min(topk, scores.size(-1)), dim=-1).indices
    return torch.zeros(scores.shape, dtype=torch.bool).scatter(-1, chosen, True) & visible
