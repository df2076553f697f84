"""Grades chapter 07 (Multi-Token Prediction, the training loss): chapters/07_mtp/exercise.py or solution.py.

References: hand-computed token shifts, closed-form sums with toy MTP modules, eq. 17-20 written as
loops, and the package's MTPModule and mtp_logits (tested on their own in tests/test_mtp.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

from minideepseek import ModelConfig, Transformer
from minideepseek.mtp import MTPModule, mtp_logits


class Passthrough(nn.Module):
    """Stands in for the MTP module's Transformer block, so its output is the block's input."""

    def forward(self, x, freqs_cis):
        return x


def test_mtp_combine_is_eh_proj_of_normalised_embedding_then_hidden(exercise):
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
    ex = exercise("07")
    batch = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])  # seq = 4 inputs + 1
    embedded, targets = ex.mtp_targets(batch, 1)
    assert embedded.tolist() == [[11, 12, 13], [21, 22, 23]]
    assert targets.tolist() == [[12, 13, 14], [22, 23, 24]]
    embedded, targets = ex.mtp_targets(batch, 2)
    assert embedded.tolist() == [[12, 13], [22, 23]]
    assert targets.tolist() == [[13, 14], [23, 24]]


def test_mtp_chain_with_toy_modules_in_closed_form(exercise):
    """Module k adds the embedding to h: h^k_i = h_i + sum_{j=1..k} Emb(t_{i+j})."""
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
