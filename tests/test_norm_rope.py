"""RMSNorm and RoPE/YaRN against closed forms written here."""

import math

import pytest
import torch

from minideepseek import ModelConfig
from minideepseek.norm import RMSNorm
from minideepseek.rope import (apply_rotary_emb, precompute_freqs_cis, rope_frequencies, softmax_scale,
                               yarn_correction_range)


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    norm.weight.data = torch.randn(16)
    x = torch.randn(3, 5, 16)
    x64, w64 = x.double(), norm.weight.double()
    expected = x64 / torch.sqrt((x64 ** 2).sum(-1, keepdim=True) / 16 + 1e-6) * w64
    torch.testing.assert_close(norm(x).double(), expected, rtol=1e-6, atol=1e-6)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def rotate_by_hand(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Pairs (x[2i], x[2i+1]) rotated by angle t*f_i with explicit cos/sin. x: (seq, dim)."""
    out = torch.empty_like(x, dtype=torch.float64)
    for t in range(x.size(0)):
        for i, f in enumerate(freqs.tolist()):
            angle = positions[t].item() * f
            a, b = x[t, 2 * i].item(), x[t, 2 * i + 1].item()
            out[t, 2 * i] = a * math.cos(angle) - b * math.sin(angle)
            out[t, 2 * i + 1] = a * math.sin(angle) + b * math.cos(angle)
    return out


def test_rotary_matches_explicit_rotation_of_interleaved_pairs():
    config = ModelConfig.from_preset("tiny")
    x = torch.randn(1, 7, 1, config.qk_rope_head_dim)
    rotated = apply_rotary_emb(x, precompute_freqs_cis(config, 7))
    expected = rotate_by_hand(x[0, :, 0], torch.arange(7), rope_frequencies(config).double())
    torch.testing.assert_close(rotated[0, :, 0].double(), expected, rtol=1e-5, atol=1e-5)


def test_scores_depend_only_on_relative_position():
    config = ModelConfig.from_preset("tiny")
    freqs_cis = precompute_freqs_cis(config, 300)
    q, k = torch.randn(config.qk_rope_head_dim), torch.randn(config.qk_rope_head_dim)

    def score(t, s):
        qt = apply_rotary_emb(q.view(1, 1, 1, -1).expand(1, 300, 1, -1).contiguous(), freqs_cis)[0, t, 0]
        ks = apply_rotary_emb(k.view(1, 1, 1, -1).expand(1, 300, 1, -1).contiguous(), freqs_cis)[0, s, 0]
        return (qt * ks).sum().item()

    for offset in [0, 3, 50]:
        assert score(10 + offset, 4 + offset) == pytest.approx(score(10, 4), abs=1e-4)
    assert score(10, 4) != pytest.approx(score(10, 5), abs=1e-3)


def test_yarn_frequencies_closed_form_for_v3():
    config = ModelConfig.from_preset("v3-671b")
    # low = floor(64 ln(4096 / (2 pi 32)) / (2 ln 10000)), high = ceil(same with 1 rotation).
    low = math.floor(64 * math.log(4096 / (2 * math.pi * 32)) / (2 * math.log(10000)))
    high = math.ceil(64 * math.log(4096 / (2 * math.pi * 1)) / (2 * math.log(10000)))
    assert (low, high) == (10, 23) == yarn_correction_range(config)
    freqs = rope_frequencies(config).double()
    for i in range(32):
        original = 10000.0 ** (-2 * i / 64)
        if i <= 10:
            expected = original  # fast-turning dims keep their frequency
        elif i >= 23:
            expected = original / 40  # slow dims are interpolated by the full factor
        else:
            blend = (i - 10) / 13
            expected = original / 40 * blend + original * (1 - blend)
        assert freqs[i].item() == pytest.approx(expected, rel=1e-6), i


def test_yarn_is_off_within_the_original_context():
    config = ModelConfig.from_preset("v3-671b", max_seq_len=4096)
    expected = torch.tensor([10000.0 ** (-2 * i / 64) for i in range(32)])
    torch.testing.assert_close(rope_frequencies(config), expected)
    assert softmax_scale(config) == pytest.approx(192 ** -0.5)


def test_softmax_scale_with_mscale():
    assert softmax_scale(ModelConfig.from_preset("v3-671b")) == pytest.approx(
        192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2)
    v2_lite = ModelConfig.from_preset("v2-lite-16b")
    assert softmax_scale(v2_lite) == pytest.approx(192 ** -0.5 * (0.1 * 0.707 * math.log(40) + 1) ** 2)
