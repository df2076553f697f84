"""Chapter 01: RMSNorm, graded against the formula evaluated in float64."""

import torch

from minideepseek.norm import RMSNorm


def formula(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y_i = x_i / sqrt((1/d) sum_j x_j^2 + eps) * g_i, written out in float64."""
    x64, g64 = x.double(), weight.double()
    mean_square = (x64 * x64).sum(dim=-1, keepdim=True) / x.size(-1)
    return x64 / torch.sqrt(mean_square + eps) * g64


def inputs(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * 3, torch.randn(
        shape[-1], generator=generator, dtype=torch.float64)


def test_matches_the_formula_in_float64(exercise):
    """rms_norm on float64 inputs must equal y_i = x_i / sqrt(mean(x^2) + eps) * g_i to 1e-10, in float64.
    Reread: The equations"""
    ex = exercise("01")
    x, weight = inputs(2, 5, 64)
    y = ex.rms_norm(x, weight, 1e-6)
    assert y.shape == x.shape and y.dtype == torch.float64
    torch.testing.assert_close(y, formula(x, weight, 1e-6), rtol=1e-10, atol=1e-10)


def test_float32_and_bfloat16_inputs_keep_their_dtype(exercise):
    """Low-precision inputs come back in their own dtype, computed in float32 inside: a bf16 result must be
    the float64 formula rounded once to bf16, and float16 inputs of size 1000 must not overflow in x^2.
    Reread: Pitfalls"""
    ex = exercise("01")
    x, weight = inputs(4, 7168, seed=1)
    expected = formula(x, weight, 1e-6)
    y32 = ex.rms_norm(x.float(), weight.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), expected, rtol=1e-5, atol=1e-5)

    # bf16 with a large dynamic range (magnitudes from 1e-4 to 1e4). Computed in float32 and cast once,
    # the result is the exact value rounded to bf16: within half a bf16 step (2^-9 relative, a hair more
    # for the double rounding float32 -> bf16), and equal to the correctly rounded value almost everywhere.
    # Computed in bf16 throughout, every operation rounds to 8 bits: a third of the values are off.
    generator = torch.Generator().manual_seed(4)
    wide = torch.randn(64, 1024, generator=generator) * torch.exp(torch.randn(64, 1024, generator=generator) * 3)
    x16, g16 = wide.bfloat16(), (torch.rand(1024, generator=generator) * 2 + 0.1).bfloat16()
    y16 = ex.rms_norm(x16, g16)
    assert y16.dtype == torch.bfloat16
    exact = formula(x16, g16, 1e-6)
    relative = ((y16.double() - exact).abs() / exact.abs()).max().item()
    assert relative <= 2**-8 * 1.01, f"bf16 output off by {relative:.2e} relative: compute in float32, cast once"
    mismatched = (y16 != exact.bfloat16()).double().mean().item()
    assert mismatched <= 1e-3, f"{mismatched:.1%} of the bf16 outputs differ from the correctly rounded value"

    # float16 overflows above 65504: x^2 of x = 1000 does, unless it is computed in float32.
    x_half = (torch.randn(3, 64, generator=generator) * 1000).half()
    y_half = ex.rms_norm(x_half, torch.ones(64, dtype=torch.half))
    assert y_half.dtype == torch.float16 and torch.isfinite(y_half).all()
    torch.testing.assert_close(y_half.double(), formula(x_half, torch.ones(64), 1e-6), rtol=2e-3, atol=2e-3)


def test_unit_rms_and_scale_invariance(exercise):
    """With unit gains the output has RMS 1 per row, does not change when x is scaled, and keeps the sign
    of x (no mean is subtracted: RMSNorm is not LayerNorm).
    Reread: The idea and its motivation"""
    ex = exercise("01")
    x, _ = inputs(3, 256, seed=2)
    ones = torch.ones(256, dtype=torch.float64)
    y = ex.rms_norm(x, ones)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ex.rms_norm(1000 * x, ones), y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ex.rms_norm(-x, ones), -y)  # no mean is subtracted: the sign survives


def test_eps_is_the_one_passed(exercise):
    """eps goes inside the square root, as passed (not a hard-coded value), and an all-zero row gives zeros.
    Reread: The equations"""
    ex = exercise("01")
    x = torch.full((1, 16), 1e-3, dtype=torch.float64)  # RMS 1e-3, far below sqrt(1e-2)
    weight = torch.ones(16, dtype=torch.float64)
    for eps in (1e-6, 1e-2):
        torch.testing.assert_close(ex.rms_norm(x, weight, eps), formula(x, weight, eps))
    zeros = ex.rms_norm(torch.zeros(2, 16), torch.ones(16))
    assert torch.equal(zeros, torch.zeros(2, 16))  # no NaN from 0 / 0


def test_agrees_with_the_package_module(exercise):
    """The function must agree with minideepseek's RMSNorm module with non-unit gains over the last dimension.
    Reread: The code, next to the math"""
    ex = exercise("01")
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 32))
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(ex.rms_norm(x, norm.weight.detach(), norm.eps), norm(x).detach())
