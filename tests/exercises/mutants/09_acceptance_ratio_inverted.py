"""The acceptance probability min(1, q/p) instead of min(1, p/q).

Caught by: test_speculative_acceptance_in_closed_form, test_accepting_then_resampling_reproduces_p
"""

import torch

from _reference import use_solution

_solution = use_solution("09", globals())


def speculative_acceptance(p, q, draft):
    _, residual = _solution.speculative_acceptance(p, q, draft)
    rows = torch.arange(draft.numel())
    return (q[rows, draft] / p[rows, draft]).clamp(max=1), residual
