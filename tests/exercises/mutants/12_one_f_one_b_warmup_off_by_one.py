"""1F1B with n_stages - s warm-up forwards instead of n_stages - 1 - s (one forward too many in flight).

Caught by: test_one_f_one_b_by_hand
"""

from _reference import use_solution

use_solution("12", globals())


def one_f_one_b(n_stages, n_micro_batches):
    schedule = []
    for stage in range(n_stages):
        warmup = min(n_stages - stage, n_micro_batches)
        ops = [("F", m) for m in range(warmup)]
        forwards = warmup
        for backward in range(n_micro_batches):
            if forwards < n_micro_batches:
                ops.append(("F", forwards))
                forwards += 1
            ops.append(("B", backward))
        schedule.append(ops)
    return schedule
