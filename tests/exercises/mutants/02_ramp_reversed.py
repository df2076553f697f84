"""The YaRN ramp the wrong way round: the fast (high-frequency) pairs are divided by the factor, the slow ones kept.

Caught by: test_yarn_frequencies_blend
"""

import torch

from _reference import use_solution

use_solution("02", globals())


def yarn_frequencies(dim, theta, factor, original_seq_len, beta_fast, beta_slow):
    freqs = rope_frequencies(dim, theta)
    low, high = yarn_correction_range(dim, theta, original_seq_len, beta_fast, beta_slow)
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / max(high - low, 1e-3)).clamp(0, 1)
    return freqs * ramp + freqs / factor * (1 - ramp)
