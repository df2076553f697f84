"""Dgrad with W^T's codes but W's block scales left untransposed (scale[i // 128, j // 128] read as
scale[j // 128, i // 128] only works for a square grid of blocks).

Caught by: test_fp8_linear_backward_matches_the_package, test_fp8_linear_backward_retiles_its_operands
"""

from _reference import use_solution

_solution = use_solution("10", globals())


def fp8_linear_backward(dy, x_q, x_scale, w_q, w_scale, gemm=None):
    gemm = gemm or fp8_gemm
    dy_q, dy_scale = quantize_activations(dy, amax_floor=1e-12)
    wrong = w_scale.reshape(w_scale.size(1), w_scale.size(0))  # the right shape, the wrong order
    dx = gemm(dy_q, dy_scale, w_q.t(), wrong)
    dyt_q, dyt_scale = quantize_activations(dy.t(), amax_floor=1e-12)
    x = x_q.float() * x_scale.repeat_interleave(128, dim=-1)
    xt_q, xt_scale = quantize_activations(x.t(), amax_floor=1e-12)
    return dx, gemm(dyt_q, dyt_scale, xt_q, xt_scale)
