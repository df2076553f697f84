"""Wgrad without re-tiling: dW = dequant(dy tiled along out)^T @ dequant(x tiled along in) in float32, reusing
the Dgrad / forward tiles, whose scales lie across the contracted (token) dimension instead of along it.

Caught by: test_fp8_linear_backward_matches_the_package, test_fp8_linear_backward_retiles_its_operands
"""

from _reference import use_solution

_solution = use_solution("10", globals())


def fp8_linear_backward(dy, x_q, x_scale, w_q, w_scale, gemm=None):
    gemm = gemm or fp8_gemm
    dy_q, dy_scale = quantize_activations(dy, amax_floor=1e-12)
    dx = gemm(dy_q, dy_scale, w_q.t(), w_scale.t())
    dy_hat = dy_q.float() * dy_scale.repeat_interleave(128, dim=-1)
    x = x_q.float() * x_scale.repeat_interleave(128, dim=-1)
    return dx, dy_hat.t() @ x
