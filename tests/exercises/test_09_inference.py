"""Grades chapter 09 (Inference with MLA): chapters/09_inference/exercise.py or solution.py.

References: per-head keys and values expanded from the latent and attended head by head in float64
(written here), hand-built logits, and closed-form distributions.
"""

import torch

from minideepseek import ModelConfig
from minideepseek.attention import MLA
from watch import TensorWatch


def expanded_attention(q_nope, q_pe, latent, pe, length, mla, scale):
    """One row, every head in a loop: expand the first ``length`` latents to keys/values, then softmax."""
    k, v = mla.expand_kv(latent[None, :length], pe[None, :length])  # (1, length, heads, ...)
    out = []
    for h in range(q_nope.size(0)):
        q = torch.cat([q_nope[h], q_pe[h]])
        weights = torch.softmax(k[0, :, h] @ q * scale, dim=0)
        out.append(weights @ v[0, :, h])
    return torch.stack(out)


def test_absorbed_decode_attention_equals_expanded_keys_and_values(exercise):
    """One decode step from the latent cache must equal attention with keys and values expanded head by head:
    score = (W_UK^T q_nope) . c_t + q_pe . k_pe_t, times the scale, softmax, then W_UV applied once to sum_t p_t
    c_t.
    Reread: The equations"""
    ex = exercise("09")
    config = ModelConfig.from_preset("tiny")
    torch.manual_seed(0)
    mla = MLA(config).double()
    batch, max_len, heads = 3, 10, config.n_heads
    q_nope = torch.randn(batch, heads, config.qk_nope_head_dim, dtype=torch.float64)
    q_pe = torch.randn(batch, heads, config.qk_rope_head_dim, dtype=torch.float64)
    latent = torch.randn(batch, max_len, config.kv_lora_rank, dtype=torch.float64)
    pe = torch.randn(batch, max_len, config.qk_rope_head_dim, dtype=torch.float64)
    lengths = torch.tensor([10, 4, 1])
    out = ex.absorbed_decode_attention(q_nope, q_pe, latent, pe, lengths, mla.wkv_b.weight.detach(),
                                       config.qk_nope_head_dim, 0.3)
    assert out.shape == (batch, heads, config.v_head_dim)
    with torch.no_grad():
        for b in range(batch):
            expected = expanded_attention(q_nope[b], q_pe[b], latent[b], pe[b], int(lengths[b]), mla, 0.3)
            torch.testing.assert_close(out[b], expected)


def test_absorbed_decode_attention_ignores_slots_past_each_length(exercise):
    """Row b attends to its first lengths[b] cache slots only: later slots hold garbage and must get zero weight
    (mask with -inf before the softmax, not 0).
    Reread: Pitfalls"""
    ex = exercise("09")
    config = ModelConfig.from_preset("tiny")
    torch.manual_seed(1)
    wkv_b = torch.randn(config.n_heads * (config.qk_nope_head_dim + config.v_head_dim), config.kv_lora_rank)
    q_nope = torch.randn(2, config.n_heads, config.qk_nope_head_dim)
    q_pe = torch.randn(2, config.n_heads, config.qk_rope_head_dim)
    latent, pe = torch.randn(2, 6, config.kv_lora_rank), torch.randn(2, 6, config.qk_rope_head_dim)
    lengths = torch.tensor([3, 5])
    first = ex.absorbed_decode_attention(q_nope, q_pe, latent, pe, lengths, wkv_b, config.qk_nope_head_dim, 0.1)
    latent[0, 3:], pe[1, 5:] = 1e4, -1e4  # garbage beyond each row's length
    second = ex.absorbed_decode_attention(q_nope, q_pe, latent, pe, lengths, wkv_b, config.qk_nope_head_dim, 0.1)
    torch.testing.assert_close(first, second)


def test_greedy_verify_by_hand(exercise):
    """A draft is accepted when it equals the main model's argmax at position n; the bonus token is the argmax
    at n+1 where accepted, the main model's own choice for n+1 otherwise.
    Reread: The equations"""
    ex = exercise("09")
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 9.0]])  # main's choices: 1, 0, 2
    next_logits = torch.tensor([[7.0, 0.0, 1.0], [0.0, 0.0, 4.0], [0.0, 2.0, 1.0]])  # choices after: 0, 2, 1
    accepted, bonus = ex.greedy_verify(torch.tensor([1, 2, 2]), logits, next_logits)
    assert accepted.tolist() == [True, False, True]
    assert bonus.tolist() == [0, 0, 1]


def test_speculative_acceptance_in_closed_form(exercise):
    """Accept with probability min(1, p[draft] / q[draft]); after a rejection resample from max(0, p - q)
    normalised to sum 1 (p itself when p == q).
    Reread: The equations"""
    ex = exercise("09")
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    q = torch.tensor([[0.25, 0.5, 0.25], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    accept, residual = ex.speculative_acceptance(p, q, torch.tensor([1, 2, 0]))
    torch.testing.assert_close(accept, torch.tensor([0.6, 0.5, 1.0]))
    # row 0: max(0, p - q) = [0.25, 0, 0] -> [1, 0, 0]; row 1: [0, 0.3, 0] -> [0, 1, 0]; row 2: p == q -> p
    torch.testing.assert_close(residual, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]]))


def test_accepting_then_resampling_reproduces_p(exercise):
    """Accepting with min(1, p/q) and resampling from the normalised residual must reproduce p exactly, for
    every draft token: P(x) = q(x) min(1, p(x)/q(x)) + P(reject) residual(x).
    Reread: The idea and its motivation"""
    ex = exercise("09")
    p = torch.tensor([0.05, 0.45, 0.3, 0.2])
    q = torch.tensor([0.4, 0.1, 0.3, 0.2])
    vocab = p.numel()
    drafts = torch.arange(vocab)
    accept, residual = ex.speculative_acceptance(p.expand(vocab, -1), q.expand(vocab, -1), drafts)
    reject = (q * (1 - accept)).sum()
    torch.testing.assert_close(q * accept + reject * residual[0], p)


def test_absorbed_decode_never_expands_the_cache(exercise):
    """The decode step must read the latent cache as it is: no tensor it builds may hold a head's keys or values
    for all cached slots, in any layout (fold W_UK into the query, apply W_UV once to the averaged latent).
    Reread: Pitfalls"""
    ex = exercise("09")
    # Widths all distinct, so that a shape tells what a tensor holds: 5 heads, keys 24 + 8, values 20, latent 12.
    heads, nope, rope, v_dim, rank, batch, max_len = 5, 24, 8, 20, 12, 2, 96
    generator = torch.Generator().manual_seed(2)
    wkv_b = torch.randn(heads * (nope + v_dim), rank, generator=generator, dtype=torch.float64) * 0.3
    q_nope = torch.randn(batch, heads, nope, generator=generator, dtype=torch.float64)
    q_pe = torch.randn(batch, heads, rope, generator=generator, dtype=torch.float64)
    latent = torch.randn(batch, max_len, rank, generator=generator, dtype=torch.float64)
    pe = torch.randn(batch, max_len, rope, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([max_len, 70])
    with TensorWatch() as watch:
        out = ex.absorbed_decode_attention(q_nope, q_pe, latent, pe, lengths, wkv_b, nope, 0.2)
    assert out.shape == (batch, heads, v_dim)
    per_head = wkv_b.view(heads, nope + v_dim, rank)
    for b in range(batch):
        length = int(lengths[b])
        for h in range(heads):  # the expanded form, one head at a time
            k = torch.cat([latent[b, :length] @ per_head[h, :nope].T, pe[b, :length]], dim=1)
            v = latent[b, :length] @ per_head[h, nope:].T
            weights = torch.softmax(k @ torch.cat([q_nope[b, h], q_pe[b, h]]) * 0.2, dim=0)
            torch.testing.assert_close(out[b, h], weights @ v)
    widths = {nope, v_dim, nope + v_dim}
    widths |= {heads * w for w in widths}
    offending = watch.offending(max_len, widths)
    assert not offending, (f"per-head keys or values built for all {max_len} cached slots (shapes {offending[:3]}): "
                           "absorb W_UK and W_UV instead of expanding the cache")
