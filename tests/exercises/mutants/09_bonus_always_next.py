"""The bonus token always taken from the next position's logits, even when the draft was rejected.

Caught by: test_greedy_verify_by_hand
"""

from _reference import use_solution

use_solution("09", globals())


def greedy_verify(draft, logits, next_logits):
    return draft == logits.argmax(dim=-1), next_logits.argmax(dim=-1)
