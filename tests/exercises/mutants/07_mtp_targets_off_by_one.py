"""mtp_targets predicts token i + k (what depth k embeds) instead of i + k + 1.

Caught by: test_mtp_targets_by_hand
"""

from _reference import use_solution

use_solution("07", globals())


def mtp_targets(batch, k):
    seq = batch.size(1) - 1
    return batch[:, k:seq], batch[:, k:seq]
