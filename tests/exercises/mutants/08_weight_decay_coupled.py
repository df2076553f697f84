"""Adam with L2 regularisation (weight decay added to the gradient) instead of AdamW's decoupled decay.

Caught by: test_adamw_step_matches_torch_over_several_steps
"""

from _reference import use_solution

_solution = use_solution("08", globals())


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay):
    return _solution.adamw_step(param, grad + weight_decay * param, exp_avg, exp_avg_sq, step, lr, betas, eps, 0.0)
