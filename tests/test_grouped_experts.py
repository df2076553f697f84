"""The grouped-experts path of MoE equals the readable loop (forward and backward)."""

import pytest
import torch
import torch.nn.functional as F

from minideepseek import ModelConfig
from minideepseek.moe import MoE, grouped_mm, grouped_mm_supported

KERNELS = [pytest.param(True, id="torch._grouped_mm"), pytest.param(False, id="padded_bmm")]


def loop_of_linears(x, weight, counts):
    return torch.cat([F.linear(chunk, w) for chunk, w in zip(x.split(counts.tolist()), weight)])


@pytest.mark.parametrize("kernel", KERNELS)
def test_grouped_mm_equals_a_loop_forward_and_backward(kernel):
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 0, 5, 1, 0, 7])  # empty groups included
    x = torch.randn(int(counts.sum()), 8, generator=generator, requires_grad=True)
    weight = torch.randn(6, 12, 8, generator=generator, requires_grad=True)
    if kernel and not grouped_mm_supported(x, weight):
        pytest.skip("torch._grouped_mm does not run here")
    upstream = torch.randn(int(counts.sum()), 12, generator=generator)  # not out.sum(): see performance.md

    out = grouped_mm(x, weight, counts, kernel=kernel)
    grads = torch.autograd.grad(out, (x, weight), upstream)
    reference = loop_of_linears(x, weight, counts)
    reference_grads = torch.autograd.grad(reference, (x, weight), upstream)

    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, reference_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6)
    assert grads[1][[1, 4]].abs().sum() == 0  # experts with no tokens get zero gradient


def test_unaligned_shapes_fall_back_to_the_padded_path():
    x, weight = torch.randn(4, 6), torch.randn(2, 5, 6)  # 6 * 4 bytes is not a multiple of 16
    assert not grouped_mm_supported(x, weight)
    counts = torch.tensor([1, 3])
    torch.testing.assert_close(grouped_mm(x, weight, counts), loop_of_linears(x, weight, counts))


def moe_config(**overrides) -> ModelConfig:
    return ModelConfig.from_preset("tiny", **{"dim": 32, "moe_inter_dim": 16, **overrides})


def run(moe, x, upstream):
    moe.zero_grad()
    x = x.clone().requires_grad_(True)
    out = moe(x)
    out.backward(upstream)
    grads = {name: p.grad.clone() for name, p in moe.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("kernel", KERNELS)
def test_grouped_moe_equals_the_loop(kernel, monkeypatch):
    torch.manual_seed(0)
    moe = MoE(moe_config()).train()
    for p in moe.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)  # large enough that the experts matter
    x, upstream = torch.randn(3, 20, 32), torch.randn(3, 20, 32)
    if not kernel:
        monkeypatch.setattr("minideepseek.moe.grouped_mm_supported", lambda *args: False)
    elif not grouped_mm_supported(x, moe.experts[0].w1.weight):
        pytest.skip("torch._grouped_mm does not run here")

    moe.experts_impl = "loop"
    loop = run(moe, x, upstream)
    moe.experts_impl = "grouped"
    grouped = run(moe, x, upstream)

    torch.testing.assert_close(grouped[0], loop[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grouped[1], loop[1], rtol=1e-5, atol=1e-5)
    assert grouped[2].keys() == loop[2].keys()
    assert "gate.weight" in loop[2] and "experts.0.w1.weight" in loop[2]
    for name in loop[2]:
        torch.testing.assert_close(grouped[2][name], loop[2][name], rtol=1e-5, atol=1e-5, msg=name)


def test_moe_equals_a_per_token_sum_over_its_chosen_experts():
    """Both paths against eq. 12 evaluated token by token: shared(u) + sum_k g_k Expert_k(u)."""
    torch.manual_seed(1)
    moe = MoE(moe_config()).eval()
    x = torch.randn(1, 10, 32)
    weights, indices, _ = moe.gate(x[0])
    expected = torch.stack([
        moe.shared_experts(x[0, t]) + sum(weights[t, j] * moe.experts[int(indices[t, j])](x[0, t])
                                          for j in range(indices.size(1)))
        for t in range(10)
    ])
    for impl in ("loop", "grouped"):
        moe.experts_impl = impl
        torch.testing.assert_close(moe(x)[0], expected, rtol=1e-5, atol=1e-6, msg=impl)


def test_unknown_experts_impl_is_an_error():
    moe = MoE(moe_config())
    moe.experts_impl = "fast"
    with pytest.raises(ValueError, match="experts_impl must be 'loop' or 'grouped'"):
        moe(torch.randn(1, 4, 32))


@pytest.mark.gpu
def test_grouped_moe_equals_the_loop_in_bf16_on_cuda():
    torch.manual_seed(0)
    moe = MoE(moe_config(dim=256, moe_inter_dim=128)).cuda().to(torch.bfloat16).train()
    x = torch.randn(4, 256, 256, device="cuda", dtype=torch.bfloat16)
    upstream = torch.randn_like(x)
    assert grouped_mm_supported(x, moe.experts[0].w1.weight)
    moe.experts_impl = "loop"
    loop = run(moe, x, upstream)
    moe.experts_impl = "grouped"
    grouped = run(moe, x, upstream)
    for a, b in [(grouped[0], loop[0]), (grouped[1], loop[1])]:
        assert ((a.float() - b.float()).norm() / b.float().norm()) < 1e-2


@pytest.mark.parametrize("hf_experts", ["eager", "grouped_mm"])
def test_both_paths_equal_transformers_moe_with_the_same_weights(hf_experts):
    """The baseline of `minideepseek bench moe`: transformers' DeepseekV3MoE holding our weights."""
    pytest.importorskip("transformers")
    from minideepseek.bench.moe import hf_moe_like

    torch.manual_seed(0)
    config = moe_config()
    moe = MoE(config).train()
    with torch.no_grad():
        moe.gate.bias.uniform_(-0.05, 0.05)  # make the bias matter for the choice
    hf = hf_moe_like(moe, config, hf_experts).train()
    x, upstream = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    theirs = run(hf, x, upstream)
    for impl in ("loop", "grouped"):
        moe.experts_impl = impl
        ours = run(moe, x, upstream)
        torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours[1], theirs[1], rtol=1e-5, atol=1e-5)
