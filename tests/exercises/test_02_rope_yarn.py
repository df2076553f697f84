"""Chapter 02: RoPE and YaRN, graded against closed forms and complex multiplication."""

import math

import pytest
import torch

from minideepseek import ModelConfig
from minideepseek.rope import rope_frequencies as package_frequencies

# DeepSeek-V3: 64 rotary dims, theta 10,000, YaRN factor 40 from a 4,096-token original context.
V3 = {"dim": 64, "theta": 10000.0, "original_seq_len": 4096, "beta_fast": 32, "beta_slow": 1}


def test_rope_frequencies_closed_form(exercise):
    """The frequencies must be f_i = theta^(-2i/dim) for the dim/2 pairs, to 1e-6 relative.
    Reread: The equations"""
    ex = exercise("02")
    for dim, theta in ((64, 10000.0), (16, 500000.0)):
        freqs = ex.rope_frequencies(dim, theta)
        assert freqs.shape == (dim // 2,)
        expected = torch.tensor([theta ** (-2 * i / dim) for i in range(dim // 2)], dtype=torch.float64)
        torch.testing.assert_close(freqs.double(), expected, rtol=1e-6, atol=0)


def boundary(turns, dim, theta, length):
    """Solve length * theta^(-2i/dim) = 2 pi turns for i."""
    return dim * math.log(length / (2 * math.pi * turns)) / (2 * math.log(theta))


def test_yarn_correction_range(exercise):
    """The blending boundaries solve L * theta^(-2i/dim) = 2 pi r for r = beta_fast (floored) and r = beta_slow
    (ceiled), clamped to [0, dim - 1]; V3 gives (10, 23).
    Reread: The equations"""
    ex = exercise("02")
    assert ex.yarn_correction_range(**V3) == (10, 23)
    # A small model: the beta_fast boundary is negative and is clamped to 0.
    assert boundary(32, 16, 10000.0, 128) < 0
    expected_high = math.ceil(boundary(1, 16, 10000.0, 128))
    assert ex.yarn_correction_range(16, 10000.0, 128, 32, 1) == (0, expected_high)
    # Boundaries 1.98 and 6.21: floor and ceil give (1, 7), rounding would give (2, 6).
    assert boundary(32, 32, 500000.0, 1024) == pytest.approx(1.9848, abs=1e-4)
    assert ex.yarn_correction_range(32, 500000.0, 1024, 32, 1) == (1, 7)
    # Boundaries -6.39 and 5.66: the low one is clamped to 0.
    assert ex.yarn_correction_range(64, 10000.0, 32, 32, 1) == (0, 6)


def test_yarn_frequencies_blend(exercise):
    """Pairs below the low boundary keep f_i, pairs above the high one get f_i / factor, and a linear ramp
    blends the pairs in between.
    Reread: The equations"""
    ex = exercise("02")
    freqs = ex.yarn_frequencies(factor=40.0, **V3).double()
    assert freqs.shape == (32,)
    for i in range(32):
        original = 10000.0 ** (-2 * i / 64)
        ramp = min(max((i - 10) / (23 - 10), 0.0), 1.0)
        expected = original * (1 - ramp) + original / 40 * ramp
        assert freqs[i].item() == pytest.approx(expected, rel=1e-6), f"pair {i}"
    # The same numbers the model uses (the package is tested on its own in tests/test_norm_rope.py).
    torch.testing.assert_close(freqs, package_frequencies(ModelConfig.from_preset("v3-671b")).double(),
                               rtol=1e-6, atol=0)


def complex_rotation(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """The reference: pairs as complex numbers x[2i] + j x[2i+1], multiplied by exp(j t f_i)."""
    x64 = x.double()
    pairs = torch.complex(x64[..., 0::2], x64[..., 1::2])
    angles = positions.double()[:, None] * freqs.double()[None, :]
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    return torch.stack((rotated.real, rotated.imag), dim=-1).flatten(-2)


def test_apply_rope_is_a_complex_multiplication(exercise):
    """Each INTERLEAVED pair (x[2i], x[2i+1]) of a token at position p is rotated by p * f_i, exactly as
    multiplying x[2i] + j x[2i+1] by exp(j p f_i); positions need not start at 0.
    Reread: Pitfalls"""
    ex = exercise("02")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 16, generator=generator)
    positions = torch.tensor([0, 1, 7, 100, 4095])  # not 0..seq-1: decoding starts mid-sequence
    freqs = 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    y = ex.apply_rope(x, positions, freqs)
    assert y.shape == x.shape and y.dtype == x.dtype
    # Angles like 4095 * f_0 held in float32 are off by ~2e-4 rad (as in the official code).
    torch.testing.assert_close(y.double(), complex_rotation(x, positions, freqs), rtol=1e-3, atol=1e-3)
    # bf16 in, bf16 out, but the angles and the rotation in float32: at position 4095 a bf16 angle would be
    # off by up to 8 radians.
    y16 = ex.apply_rope(x.bfloat16(), positions, freqs)
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.double(), complex_rotation(x.bfloat16(), positions, freqs), rtol=2e-2, atol=2e-2)


def test_scores_depend_on_relative_position_only(exercise):
    """A rotated query and key must give a score that depends only on their distance, and the rotation must keep
    vector lengths.
    Reread: The idea and its motivation"""
    ex = exercise("02")
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 1, 1, 1, 64, generator=generator)
    freqs = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)

    def score(t, s):
        qt = ex.apply_rope(q, torch.tensor([t]), freqs)
        ks = ex.apply_rope(k, torch.tensor([s]), freqs)
        return (qt.double() * ks.double()).sum().item()

    assert score(9, 2) == pytest.approx(score(1009, 1002), abs=1e-3)
    assert score(9, 2) == pytest.approx(score(7, 0), abs=1e-3)
    assert score(9, 2) != pytest.approx(score(9, 3), abs=1e-2)
    # A rotation keeps lengths.
    rotated = ex.apply_rope(q, torch.tensor([123]), freqs)
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


def test_yarn_softmax_scale(exercise):
    """The softmax scale is 1/sqrt(d) times m SQUARED, m = 0.1 * mscale * ln(factor) + 1 (one m for the query,
    one for the key): 0.1352338 for V3.
    Reread: Pitfalls"""
    ex = exercise("02")
    assert ex.yarn_softmax_scale(192, 40.0, 1.0) == pytest.approx(0.1352338, rel=1e-6)
    assert ex.yarn_softmax_scale(192, 1.0, 1.0) == pytest.approx(1 / math.sqrt(192), rel=1e-12)
    m = 0.1 * 0.707 * math.log(40) + 1  # DeepSeek-V2-Lite's mscale
    assert ex.yarn_softmax_scale(192, 40.0, 0.707) == pytest.approx(m * m / math.sqrt(192), rel=1e-9)
