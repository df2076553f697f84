"""The residual max(0, p - q) returned without normalising it to a distribution.

Caught by: test_speculative_acceptance_in_closed_form, test_accepting_then_resampling_reproduces_p
"""

from _reference import use_solution

_solution = use_solution("09", globals())


def speculative_acceptance(p, q, draft):
    accept, _ = _solution.speculative_acceptance(p, q, draft)
    return accept, (p - q).clamp(min=0)
