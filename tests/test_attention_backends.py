"""Attention backends (eager, sdpa, sdpa_padded) and configure_speed: same function, forward and backward."""

import math

import pytest
import torch

from minideepseek import ModelConfig, Transformer
from minideepseek.attention import MLA, causal_attention
from minideepseek.losses import compute_loss
from minideepseek.speed import configure_speed

BACKENDS = ["eager", "sdpa", "sdpa_padded"]


def naive_attention(q, k, v, scale):
    """softmax over positions t <= s of q_s . k_t * scale, then the weighted sum of v_t; one (b, h, s) at a time."""
    batch, seq, heads, _ = q.shape
    out = torch.zeros(batch, seq, heads, v.size(-1), dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            for s in range(seq):
                logits = torch.stack([q[b, s, h] @ k[b, t, h] * scale for t in range(s + 1)])
                out[b, s, h] = (logits.softmax(0).unsqueeze(-1) * v[b, : s + 1, h]).sum(0)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_equal_naive_attention_with_unequal_head_sizes(backend):
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 7, 3, 12, generator=generator, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 7, 3, 8, generator=generator, requires_grad=True)  # v narrower than q/k, as in MLA
    upstream = torch.randn(2, 7, 3, 8, generator=generator)
    scale = 0.9 / math.sqrt(12)  # not 1/sqrt(d): the backends must use the scale they are given

    out = causal_attention(q, k, v, scale, backend)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    expected = naive_attention(q, k, v, scale)
    expected_grads = torch.autograd.grad(expected, (q, k, v), upstream)

    assert out.shape == (2, 7, 3, 8)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, expected_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6)


def test_unknown_backend_is_an_error():
    q = torch.randn(1, 2, 1, 4)
    with pytest.raises(ValueError, match="'eager', 'sdpa' or 'sdpa_padded'"):
        causal_attention(q, q, q, 1.0, "flash")


def test_configure_speed_keeps_the_model_function():
    """The whole model (MLA + MoE + MTP), loss and every gradient: fast paths equal the reference paths."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("tiny", n_layers=2, vocab_size=64)).train()
    batch = torch.randint(0, 64, (2, 17))

    def loss_and_grads():
        model.zero_grad()
        out = compute_loss(model, batch)
        out.loss.backward()
        return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    reference = loss_and_grads()
    configure_speed(model, attention="sdpa", experts="grouped")
    assert all(m.backend == "sdpa" for m in model.modules() if isinstance(m, MLA))
    fast = loss_and_grads()
    torch.testing.assert_close(fast[0], reference[0], rtol=1e-5, atol=1e-6)
    assert fast[1].keys() == reference[1].keys()
    for name in reference[1]:
        torch.testing.assert_close(fast[1][name], reference[1][name], rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="experts must be one of"):
        configure_speed(model, experts="fast")


@pytest.mark.gpu
@pytest.mark.parametrize("kernel, backend", [("CUDNN_ATTENTION", "sdpa"), ("FLASH_ATTENTION", "sdpa_padded")])
def test_fused_kernels_accept_mla_head_sizes_on_cuda(kernel, backend):
    """cuDNN takes qk 192 / v 128 as they are (Hopper); flash needs V padded to 192."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if kernel == "CUDNN_ATTENTION" and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cuDNN fused attention for these head sizes is the Hopper path")
    q, k = (torch.randn(2, 256, 8, 192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(2, 256, 8, 128, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(getattr(SDPBackend, kernel)):
        out = causal_attention(q, k, v, 192**-0.5, backend)
    expected = causal_attention(q.float(), k.float(), v.float(), 192**-0.5, "eager")
    assert (out.float() - expected).norm() / expected.norm() < 1e-2
