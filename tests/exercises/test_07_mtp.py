"""Grades chapter 07 (Multi-Token Prediction, the training loss): chapters/07_mtp/exercise.py or solution.py.

References: hand-computed token shifts, closed-form sums with toy MTP modules, eq. 17-20 written as
loops, and the package's MTPModule and mtp_logits (tested on their own in tests/test_mtp.py).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minideepseek import ModelConfig, Transformer
from minideepseek.losses import compute_loss as package_compute_loss
from minideepseek.moe import MoE
from minideepseek.mtp import MTPModule, mtp_logits


class Passthrough(nn.Module):
    """Stands in for the MTP module's Transformer block, so its output is the block's input."""

    def forward(self, x, freqs_cis):
        return x


def test_mtp_combine_is_eh_proj_of_normalised_embedding_then_hidden(exercise):
    """The MTP input is eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h)]): the normalised EMBEDDING first (the released
    weights' order), each half with its own RMSNorm gain.
    Reread: Pitfalls"""
    ex = exercise("07")
    torch.manual_seed(0)
    config = ModelConfig.from_preset("tiny", dim=16)
    module = MTPModule(config.n_layers, config)
    with torch.no_grad():
        module.enorm.weight.uniform_(0.5, 1.5)
        module.hnorm.weight.uniform_(0.5, 1.5)
    module.block = Passthrough()
    h, emb = torch.randn(2, 5, 16) * 3, torch.randn(2, 5, 16)
    out = ex.mtp_combine(h, emb, module.enorm.weight.detach(), module.hnorm.weight.detach(),
                         module.eh_proj.weight.detach(), config.norm_eps)
    assert out.shape == (2, 5, 16)
    expected = torch.cat([F.rms_norm(emb, (16,), module.enorm.weight.detach(), 1e-6),
                          F.rms_norm(h, (16,), module.hnorm.weight.detach(), 1e-6)], dim=-1) @ module.eh_proj.weight.T
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(out, module(h, emb, None), rtol=1e-5, atol=1e-5)


def test_mtp_targets_by_hand(exercise):
    """At position i depth k embeds token i+k and predicts token i+k+1; positions without a target are dropped,
    leaving seq - k of them.
    Reread: Pitfalls"""
    ex = exercise("07")
    batch = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])  # seq = 4 inputs + 1
    embedded, targets = ex.mtp_targets(batch, 1)
    assert embedded.tolist() == [[11, 12, 13], [21, 22, 23]]
    assert targets.tolist() == [[12, 13, 14], [22, 23, 24]]
    embedded, targets = ex.mtp_targets(batch, 2)
    assert embedded.tolist() == [[12, 13], [22, 23]]
    assert targets.tolist() == [[13, 14], [23, 24]]


def test_mtp_chain_with_toy_modules_in_closed_form(exercise):
    """Each depth runs on the previous depth's output (a chain, not parallel heads), truncated to seq - k positions,
    with the embeddings of the tokens k ahead: here module k adds them, so h^k_i = h_i + sum_{j<=k} Emb(t_{i+j}).
    Reread: Pitfalls"""
    ex = exercise("07")
    tokens = torch.tensor([[1, 2, 4, 8, 16, 32]])
    h = torch.full((1, 6, 3), 1000.0)
    freqs = torch.arange(6.0)

    def add(h, e, f):
        assert f.shape[0] == h.shape[1] == e.shape[1], "freqs_cis, h and the embeddings must cover the same positions"
        return h + e

    out = ex.mtp_chain(h, tokens, lambda t: t.float().unsqueeze(-1).expand(-1, -1, 3), [add, add, add], freqs)
    assert [o.shape for o in out] == [(1, 5, 3), (1, 4, 3), (1, 3, 3)]
    t = tokens[0].tolist()
    for k, o in enumerate(out, start=1):
        expected = [1000 + sum(t[i + j] for j in range(1, k + 1)) for i in range(6 - k)]
        assert o[0, :, 0].tolist() == expected, f"depth {k}"


def test_mtp_chain_matches_the_package(exercise):
    """The chained hidden states must equal the package's mtp_logits when passed through each module's own norm
    and the shared head.
    Reread: The code"""
    ex = exercise("07")
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("tiny", n_layers=2, vocab_size=50, n_mtp_layers=2)).eval()
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        h = model.forward_hidden(tokens)
        hidden = ex.mtp_chain(h, tokens, model.embed, list(model.mtp), model.freqs_cis(9, tokens.device))
        expected = mtp_logits(model, h, tokens)
        for module, h_k, logits in zip(model.mtp, hidden, expected):
            torch.testing.assert_close(model.head(module.norm(h_k)), logits)


def naive_balance_loss(scores, indices, alpha):
    batch, seq, n_experts = scores.shape
    k = indices.size(-1)
    total = 0.0
    for b in range(batch):
        picks = [sum(int(i in indices[b, t].tolist()) for t in range(seq)) for i in range(n_experts)]
        for i in range(n_experts):
            f = n_experts / (k * seq) * picks[i]
            p = sum((scores[b, t, i] / scores[b, t].sum()).item() for t in range(seq)) / seq
            total += alpha * f * p
    return total / batch


def test_sequence_balance_loss(exercise):
    """Per sequence f_i = N_r / (K_r T) * (times expert i was chosen), P_i = mean over tokens of s_i / sum_j
    s_j, L = alpha * sum_i f_i P_i, averaged over the batch; gradients flow through P.
    Reread: The equations"""
    ex = exercise("07")
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 6, 8, generator=generator, requires_grad=True)
    indices = torch.rand(2, 6, 8, generator=generator).topk(3, dim=-1).indices
    loss = ex.sequence_balance_loss(scores, indices, 0.01)
    assert abs(loss.item() - naive_balance_loss(scores.detach(), indices, 0.01)) < 1e-7
    loss.backward()
    assert scores.grad.abs().sum() > 0
    # uniform: every expert picked equally often, equal scores -> alpha; collapsed: alpha * N_r / K_r
    uniform = ex.sequence_balance_loss(torch.ones(1, 4, 8), torch.arange(8).view(1, 4, 2), 1e-4)
    assert abs(uniform.item() - 1e-4) < 1e-10
    collapsed_scores = torch.full((1, 4, 8), 1e-9)
    collapsed_scores[..., :2] = 0.5
    collapsed = ex.sequence_balance_loss(collapsed_scores, torch.tensor([0, 1]).expand(1, 4, 2), 1e-4)
    assert abs(collapsed.item() - 1e-4 * 8 / 2) < 1e-9


def test_compute_loss_matches_the_package(exercise):
    """The total loss is L_main + lambda / D * sum_k L_MTP^k + the sum of every MoE layer's balance loss, with the
    main model predicting token i+1 and depth k token i+k+1: it must equal the package's compute_loss.
    Reread: The equations"""
    ex = exercise("07")
    torch.manual_seed(4)
    config = ModelConfig.from_preset("tiny", n_layers=2, vocab_size=40, n_mtp_layers=2, balance_loss_alpha=0.01,
                                     mtp_loss_weight=0.3)
    model = Transformer(config).train()
    batch = torch.randint(0, 40, (2, 10))
    reference = package_compute_loss(model, batch)
    inputs = batch[:, :-1]
    h = model.forward_hidden(inputs)
    main_logits = model.head(model.norm(h))
    depth_logits = mtp_logits(model, h, inputs)
    balance = [m.balance_loss for m in model.modules() if isinstance(m, MoE) and m.balance_loss is not None]
    assert len(balance) == 3  # MoE layer 1 and the blocks of the two MTP modules (layer 0 is dense)
    loss, main, mtp = ex.compute_loss(main_logits, depth_logits, batch, balance, config.mtp_loss_weight)
    torch.testing.assert_close(main, reference.main)
    assert len(mtp) == 2
    for got, expected in zip(mtp, reference.mtp):
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(loss, reference.loss)
    loss.backward()  # the loss is differentiable end to end
    assert model.mtp[1].eh_proj.weight.grad is not None


def test_compute_loss_weights_each_depth_by_lambda_over_d(exercise):
    """With D depths each MTP loss counts lambda / D (not lambda); targets shift by k + 1 for depth k; balance
    losses add up; with D = 0 the loss is L_main plus the balance losses.
    Reread: Pitfalls"""
    ex = exercise("07")
    vocab, seq = 5, 6
    batch = torch.tensor([[0, 1, 2, 3, 4, 0, 1]])

    def one_hot(targets, confidence):
        """Logits whose cross-entropy is known: the target gets `confidence`, every other token 0."""
        return torch.nn.functional.one_hot(targets, vocab).float() * confidence

    def ce(confidence):
        return -math.log(math.exp(confidence) / (math.exp(confidence) + vocab - 1))

    main_logits = one_hot(batch[:, 1:], 2.0)  # (1, 6, 5)
    depth_logits = [one_hot(batch[:, k + 1:], float(k)) for k in range(1, 4)]  # depth k: (1, 6 - k, 5)
    balance = [torch.tensor(0.25), torch.tensor(0.5)]
    loss, main, mtp = ex.compute_loss(main_logits, depth_logits, batch, balance, 0.3)
    assert main.item() == pytest.approx(ce(2.0), rel=1e-6)
    assert [m.item() for m in mtp] == pytest.approx([ce(1.0), ce(2.0), ce(3.0)], rel=1e-6)
    expected = ce(2.0) + 0.3 / 3 * (ce(1.0) + ce(2.0) + ce(3.0)) + 0.75
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss, main, mtp = ex.compute_loss(main_logits, [], batch, [], 0.3)
    assert mtp == [] and loss.item() == pytest.approx(ce(2.0), rel=1e-6)
    assert seq == main_logits.size(1)
