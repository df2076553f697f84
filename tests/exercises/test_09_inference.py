"""Grades chapter 09 (Inference with MLA): chapters/09_inference/exercise.py or solution.py.

References: per-head keys and values expanded from the latent and attended head by head in float64
(written here), hand-built logits, and closed-form distributions.
"""

import torch

from minideepseek import ModelConfig
from minideepseek.attention import MLA


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
    ex = exercise("09")
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 9.0]])  # main's choices: 1, 0, 2
    next_logits = torch.tensor([[7.0, 0.0, 1.0], [0.0, 0.0, 4.0], [0.0, 2.0, 1.0]])  # choices after: 0, 2, 1
    accepted, bonus = ex.greedy_verify(torch.tensor([1, 2, 2]), logits, next_logits)
    assert accepted.tolist() == [True, False, True]
    assert bonus.tolist() == [0, 0, 1]


def test_speculative_acceptance_in_closed_form(exercise):
    ex = exercise("09")
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    q = torch.tensor([[0.25, 0.5, 0.25], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    accept, residual = ex.speculative_acceptance(p, q, torch.tensor([1, 2, 0]))
    torch.testing.assert_close(accept, torch.tensor([0.6, 0.5, 1.0]))
    # row 0: max(0, p - q) = [0.25, 0, 0] -> [1, 0, 0]; row 1: [0, 0.3, 0] -> [0, 1, 0]; row 2: p == q -> p
    torch.testing.assert_close(residual, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]]))


def test_accepting_then_resampling_reproduces_p(exercise):
    """P(output = x) = q(x) min(1, p(x)/q(x)) + P(reject) residual(x) = p(x), for every draft distribution."""
    ex = exercise("09")
    p = torch.tensor([0.05, 0.45, 0.3, 0.2])
    q = torch.tensor([0.4, 0.1, 0.3, 0.2])
    vocab = p.numel()
    drafts = torch.arange(vocab)
    accept, residual = ex.speculative_acceptance(p.expand(vocab, -1), q.expand(vocab, -1), drafts)
    reject = (q * (1 - accept)).sum()
    torch.testing.assert_close(q * accept + reject * residual[0], p)
