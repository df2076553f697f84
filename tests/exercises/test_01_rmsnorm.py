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
    ex = exercise("01")
    x, weight = inputs(2, 5, 64)
    y = ex.rms_norm(x, weight, 1e-6)
    assert y.shape == x.shape and y.dtype == torch.float64
    torch.testing.assert_close(y, formula(x, weight, 1e-6), rtol=1e-10, atol=1e-10)


def test_float32_and_bfloat16_inputs_keep_their_dtype(exercise):
    ex = exercise("01")
    x, weight = inputs(4, 7168, seed=1)
    expected = formula(x, weight, 1e-6)
    y32 = ex.rms_norm(x.float(), weight.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), expected, rtol=1e-5, atol=1e-5)
    y16 = ex.rms_norm(x.bfloat16(), weight.bfloat16())
    assert y16.dtype == torch.bfloat16
    # Within bf16 rounding of the inputs and of the output (8 bits of mantissa).
    expected16 = formula(x.bfloat16(), weight.bfloat16(), 1e-6)
    torch.testing.assert_close(y16.double(), expected16, rtol=2e-2, atol=2e-2)


def test_unit_rms_and_scale_invariance(exercise):
    ex = exercise("01")
    x, _ = inputs(3, 256, seed=2)
    ones = torch.ones(256, dtype=torch.float64)
    y = ex.rms_norm(x, ones)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ex.rms_norm(1000 * x, ones), y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ex.rms_norm(-x, ones), -y)  # no mean is subtracted: the sign survives


def test_eps_is_the_one_passed(exercise):
    ex = exercise("01")
    x = torch.full((1, 16), 1e-3, dtype=torch.float64)  # RMS 1e-3, far below sqrt(1e-2)
    weight = torch.ones(16, dtype=torch.float64)
    for eps in (1e-6, 1e-2):
        torch.testing.assert_close(ex.rms_norm(x, weight, eps), formula(x, weight, eps))
    zeros = ex.rms_norm(torch.zeros(2, 16), torch.ones(16))
    assert torch.equal(zeros, torch.zeros(2, 16))  # no NaN from 0 / 0


def test_agrees_with_the_package_module(exercise):
    ex = exercise("01")
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 32))
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(ex.rms_norm(x, norm.weight.detach(), norm.eps), norm(x).detach())
