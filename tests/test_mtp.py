"""Multi-Token Prediction and the full training loss (minideepseek/mtp.py, losses.py)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from minideepseek import ModelConfig, Transformer
from minideepseek.losses import compute_loss
from minideepseek.mtp import mtp_logits

SEQ = 12


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.from_preset("tiny", **{"n_layers": 2, "vocab_size": 97, **overrides})


def make(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny(**overrides)).train()


def random_batch(config: ModelConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, SEQ + 1), generator=generator)


def test_mtp_losses_use_targets_k_plus_one_positions_ahead():
    """Loss of depth k = mean over (b, i) of -log p^k_i[batch[b, i + k + 1]], written out position by position."""
    model = make(n_mtp_layers=2)
    batch = random_batch(model.config)
    out = compute_loss(model, batch)
    with torch.no_grad():
        inputs = batch[:, :-1]
        all_logits = mtp_logits(model, model.forward_hidden(inputs), inputs)
    assert len(out.mtp) == 2
    for k, logits in enumerate(all_logits, start=1):
        assert logits.shape == (2, SEQ - k, model.config.vocab_size)
        terms = [-logits[b, i].log_softmax(-1)[batch[b, i + k + 1]]
                 for b in range(2) for i in range(SEQ) if i + k + 1 <= SEQ]
        assert len(terms) == 2 * (SEQ - k)
        torch.testing.assert_close(out.mtp[k - 1], torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("changed", [1, 5, SEQ - 1])
def test_depth_k_at_position_i_sees_exactly_the_tokens_up_to_i_plus_k(changed):
    """Changing input token j changes depth k's prediction at i iff i >= j - k (it is the embedding
    fed at i = j - k, and attention carries it forward); earlier positions stay equal (up to the
    rounding of expert matmuls whose row counts changed)."""
    model = make(n_mtp_layers=2).eval()
    tokens = random_batch(model.config, batch=1)[:, :-1]
    other = tokens.clone()
    other[0, changed] = (tokens[0, changed] + 1) % model.config.vocab_size
    with torch.no_grad():
        before = mtp_logits(model, model.forward_hidden(tokens), tokens)
        after = mtp_logits(model, model.forward_hidden(other), other)
    for k, (a, b) in enumerate(zip(before, after), start=1):
        differs = (a - b).abs().amax(dim=-1)[0]  # (SEQ - k,)
        for i in range(SEQ - k):
            if i < changed - k:
                assert differs[i] < 1e-5, f"depth {k} position {i} must not see token {changed}"
            else:
                assert differs[i] > 1e-3, f"depth {k} position {i} must see token {changed}"


def test_no_mtp_is_exactly_the_plain_model():
    model = make(n_mtp_layers=0, balance_loss_alpha=0.0)
    batch = random_batch(model.config)
    out = compute_loss(model, batch)
    plain = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
    assert out.mtp == []
    assert out.balance == 0
    assert torch.equal(out.loss, plain)
    assert torch.equal(out.main, plain)


def test_mtp_leaves_the_main_loss_untouched():
    """The same main weights with and without MTP modules give the same main loss."""
    with_mtp = make(n_mtp_layers=1)
    without = Transformer(dataclasses.replace(with_mtp.config, n_mtp_layers=0)).train()
    missing, unexpected = without.load_state_dict(with_mtp.state_dict(), strict=False)
    assert not missing and all(key.startswith("mtp.") for key in unexpected)
    batch = random_batch(with_mtp.config)
    a, b = compute_loss(with_mtp, batch), compute_loss(without, batch)
    torch.testing.assert_close(a.main, b.main, rtol=0, atol=0)


def test_total_loss_combines_the_parts_with_lambda_over_depth():
    model = make(n_mtp_layers=2, mtp_loss_weight=0.3, balance_loss_alpha=1e-2)
    out = compute_loss(model, random_batch(model.config))
    expected = out.main.item() + 0.3 / 2 * (out.mtp[0].item() + out.mtp[1].item()) + out.balance.item()
    assert out.balance > 0
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-6)


def test_mtp_gradients_reach_the_shared_embedding_head_and_main_layers():
    model = make(n_mtp_layers=1, balance_loss_alpha=0.0)
    batch = random_batch(model.config)
    compute_loss(model, batch).mtp[0].backward()
    depth_one_inputs = batch[:, 1:-1].unique()  # tokens whose embedding depth 1 takes in
    assert model.embed.weight.grad[depth_one_inputs].abs().sum(-1).gt(0).all()
    assert model.head.weight.grad.abs().sum() > 0
    assert model.layers[0].attn.wkv_a.weight.grad.abs().sum() > 0  # through h^0
    assert model.mtp[0].eh_proj.weight.grad.abs().sum() > 0
    assert model.norm.weight.grad is None  # MTP has its own output norm (shared_head.norm)


def test_mtp_needs_sequences_longer_than_its_depth():
    model = make(n_mtp_layers=2)
    with pytest.raises(ValueError, match="longer than 2 tokens"):
        compute_loss(model, random_batch(model.config)[:, :3])
    with pytest.raises(ValueError, match="batch must be"):
        compute_loss(model, torch.zeros(5, dtype=torch.long))
