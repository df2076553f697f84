"""Grades chapter 14 (DeepSeek-V3.2's sparse attention): chapters/14_sparse_attention/exercise.py or solution.py.

References: the indexer's scores, the top-k and the restricted softmax written as plain loops, RoPE pairs
checked by hand, and the package's ``minideepseek.indexer`` (tested against transformers' DeepseekV32 in
tests/test_sparse_attention.py).
"""

import math

import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.indexer import apply_rotary_emb_half
from minideepseek.rope import apply_rotary_emb, precompute_freqs_cis


def test_rotate_half_split_pairs_i_with_i_plus_half(exercise):
    """The indexer rotates dims i and i + r/2 together (half-split), unlike MLA's interleaved pairs (2i, 2i+1).
    Reread: Pitfalls"""
    ex = exercise("14")
    x = torch.zeros(1, 1, 1, 8)
    x[..., 1] = 1.0
    angle = torch.tensor([[0.0, 0.7, 0.0, 0.0]])
    out = ex.rotate_half_split(x, torch.polar(torch.ones_like(angle), angle))
    expected = torch.tensor([0, math.cos(0.7), 0, 0, 0, math.sin(0.7), 0, 0])
    torch.testing.assert_close(out[0, 0, 0], expected, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny-dsa")
    freqs = precompute_freqs_cis(config, 10)
    x = torch.randn(2, 10, 3, config.qk_rope_head_dim)
    out = ex.rotate_half_split(x, freqs)
    torch.testing.assert_close(out, apply_rotary_emb_half(x, freqs), atol=1e-5, rtol=1e-5)
    assert (out - apply_rotary_emb(x, freqs)).abs().max() > 0.1, "that is MLA's interleaved layout"


def test_indexer_scores_against_loops(exercise):
    """I[t, s] = sum_j w[t, j] * ReLU(scale * q[t, j] . k[s]): ReLU per head BEFORE the weighted sum, one key per
    token shared by every head, negative weights allowed, float32 out.
    Reread: The equations"""
    ex = exercise("14")
    torch.manual_seed(1)
    b, t, s, h, d = 2, 3, 5, 4, 8
    q, k, w = torch.randn(b, t, h, d), torch.randn(b, s, d), torch.randn(b, t, h)
    scores = ex.indexer_scores(q, k, w, d ** -0.5)
    assert scores.shape == (b, t, s) and scores.dtype == torch.float32
    for bi in range(b):
        for ti in range(t):
            for si in range(s):
                expected = sum(float(w[bi, ti, j]) * max(0.0, float(q[bi, ti, j] @ k[bi, si]) * d ** -0.5)
                               for j in range(h))
                assert abs(float(scores[bi, ti, si]) - expected) < 1e-5
    low = ex.indexer_scores(q.bfloat16(), k.bfloat16(), w.bfloat16(), d ** -0.5)
    assert low.dtype == torch.float32


def test_indexer_scores_match_the_package_indexer(exercise):
    """With the package's Indexer weights, the exercise's scores are the Indexer's.
    Reread: The equations"""
    ex = exercise("14")
    torch.manual_seed(2)
    config = ModelConfig.from_preset("tiny-dsa", n_layers=1, n_mtp_layers=0, init_std=0.2)
    mla = Transformer(config).layers[0].attn
    x = torch.randn(1, 20, config.dim)
    freqs = precompute_freqs_cis(config, 20)
    with torch.no_grad():
        qr = mla.q_norm(mla.wq_a(x))
        ix = mla.indexer
        expected = ix(x, qr, freqs)
        got = ex.indexer_scores(ix.queries(qr, freqs), ix.keys(x, freqs), ix.head_weights(x), ix.softmax_scale)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_topk_mask_keeps_the_best_visible_keys(exercise):
    """Each query keeps its topk best VISIBLE keys: hidden keys are never kept, not even when fewer than topk are
    visible, and a hidden key's high score does not push a visible one out.
    Reread: Pitfalls"""
    ex = exercise("14")
    scores = torch.tensor([[[5.0, 1.0, 9.0, 8.0, 7.0],
                            [5.0, 1.0, 9.0, 8.0, 7.0],
                            [1.0, 5.0, 2.0, 9.0, 8.0],
                            [3.0, 1.0, 2.0, 0.5, 9.0]]])
    visible = torch.ones(4, 5, dtype=torch.bool).tril(1)  # query t sees keys 0 .. t+1
    mask = ex.topk_mask(scores, visible, 2)
    assert mask.shape == (1, 4, 5) and mask.dtype == torch.bool
    assert mask[0].int().tolist() == [[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 0, 0, 0, 1]]
    torch.manual_seed(3)
    scores = torch.randn(2, 6, 9)
    visible = torch.ones(6, 9, dtype=torch.bool).tril(3)
    mask = ex.topk_mask(scores, visible, 4)
    for b in range(2):
        for t in range(6):
            allowed = [s for s in range(9) if visible[t, s]]
            best = sorted(sorted(allowed, key=lambda s: -float(scores[b, t, s]))[:4])
            assert mask[b, t].nonzero().flatten().tolist() == best


def test_sparse_attention_against_loops(exercise):
    """softmax over the kept keys only: a dropped key gets exactly zero weight (masked with -inf, not 0).
    Reread: The equations"""
    ex = exercise("14")
    torch.manual_seed(4)
    b, t, s, h, dq, dv = 1, 4, 6, 2, 5, 3
    q, k, v = torch.randn(b, t, h, dq), torch.randn(b, s, h, dq), torch.randn(b, s, h, dv)
    keep = torch.rand(b, t, s) > 0.5
    keep[..., 0] = True
    out = ex.sparse_attention(q, k, v, keep, 0.4)
    assert out.shape == (b, t, h, dv)
    for ti in range(t):
        for hi in range(h):
            kept = [si for si in range(s) if keep[0, ti, si]]
            logits = torch.tensor([float(q[0, ti, hi] @ k[0, si, hi]) * 0.4 for si in kept])
            weights = logits.softmax(0)
            expected = sum(w * v[0, si, hi] for w, si in zip(weights, kept))
            torch.testing.assert_close(out[0, ti, hi], expected, atol=1e-5, rtol=1e-5)


def test_whole_selection_matches_the_package_layer(exercise):
    """Scores, then the causal top-k: the keys the package's V3.2 layer attends to.
    Reread: The code"""
    ex = exercise("14")
    torch.manual_seed(5)
    config = ModelConfig.from_preset("tiny-dsa", n_layers=1, n_mtp_layers=0, init_std=0.2, index_topk=8)
    model = Transformer(config).eval()
    mla = model.layers[0].attn
    mla.indexer.record = {}
    x = torch.randn(1, 24, config.dim)
    freqs = precompute_freqs_cis(config, 24)
    with torch.no_grad():
        mla(x, freqs)
        qr = mla.q_norm(mla.wq_a(x))
        ix = mla.indexer
        scores = ex.indexer_scores(ix.queries(qr, freqs), ix.keys(x, freqs), ix.head_weights(x), ix.softmax_scale)
    mask = ex.topk_mask(scores, torch.ones(24, 24, dtype=torch.bool).tril(), 8)
    assert torch.equal(mask, ix.record["selected"])
