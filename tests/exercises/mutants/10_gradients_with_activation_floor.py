"""Gradients quantised with the activations' 1e-4 amax floor: a gradient of size 1e-6 is flushed to zero.

Caught by: test_fp8_linear_backward_matches_the_package, test_fp8_linear_backward_retiles_its_operands
"""

from _reference import use_solution

_solution = use_solution("10", globals())


def fp8_linear_backward(dy, x_q, x_scale, w_q, w_scale, gemm=None):
    gemm = gemm or fp8_gemm
    dy_q, dy_scale = quantize_activations(dy)
    dx = gemm(dy_q, dy_scale, w_q.t(), w_scale.t())
    dyt_q, dyt_scale = quantize_activations(dy.t())
    x = x_q.float() * x_scale.repeat_interleave(128, dim=-1)
    xt_q, xt_scale = quantize_activations(x.t())
    return dx, gemm(dyt_q, dyt_scale, xt_q, xt_scale)
