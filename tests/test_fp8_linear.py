"""FP8Linear and model conversion: forward and gradients against float64 references of the
quantised operations, the report's list of high-precision parts, FP8 weight storage, and a
short FP8-vs-BF16 training run."""

import pytest
import torch
from torch import nn

from minideepseek import ModelConfig, Transformer
from minideepseek.fp8_experiments import relative_loss_gap, train_bytes
from minideepseek.fp8 import dequantize_blockwise, quantize, quantize_blockwise
from minideepseek.fp8_linear import FP8Linear, to_fp8
from minideepseek.moe import Gate



def dq(t: torch.Tensor, group) -> torch.Tensor:
    """Quantise-dequantise in float64: the value the FP8 GEMM actually multiplies."""
    return quantize(t, group).dequantize().double()


def layer_and_input(tokens=200, in_features=384, out_features=320, seed=0, recipe="block"):
    generator = torch.Generator().manual_seed(seed)
    layer = FP8Linear(in_features, out_features, recipe=recipe)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.05)
    x = torch.randn(2, tokens // 2, in_features, generator=generator).requires_grad_()
    return layer, x


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_forward_is_the_product_of_1x128_activations_and_128x128_weights():
    layer, x = layer_and_input()
    y = layer(x)
    assert y.shape == (2, 100, 320) and y.dtype == torch.float32
    reference = dq(x.detach().reshape(-1, 384), (1, 128)) @ dq(layer.weight.detach(), (128, 128)).T
    assert relative(y.reshape(-1, 320), reference) < 1e-6
    assert relative(y, x @ layer.weight.T) < 0.06  # and within FP8's few percent of the exact product


def test_gradients_are_fp8_gemms_as_in_the_report():
    layer, x = layer_and_input()
    dy = torch.randn(2, 100, 320, generator=torch.Generator().manual_seed(1))
    layer(x).backward(dy)
    x2, dy2, w = x.detach().reshape(-1, 384), dy.reshape(-1, 320), layer.weight.detach()
    # Dgrad: dy in 1x128 tiles (along the output channels), W in 128x128 blocks.
    dx_ref = dq(dy2, (1, 128)) @ dq(w, (128, 128))
    # Wgrad: dy and x both in 128x1 tiles (1x128 along the tokens of their transposes); x is the cached FP8 copy.
    x_cached = quantize(x2, (1, 128)).dequantize()
    dw_ref = dq(dy2.T, (1, 128)) @ dq(x_cached.T, (1, 128)).T
    assert relative(x.grad.reshape(-1, 384), dx_ref) < 1e-6
    assert relative(layer.weight.grad, dw_ref) < 1e-6
    # ... which stay within FP8 error of the exact gradients.
    assert relative(x.grad.reshape(-1, 384), dy2 @ w) < 0.06
    assert relative(layer.weight.grad, dy2.T @ x2) < 0.08


def test_square_weight_blocks_transpose_exactly():
    """Why 128x128: the Dgrad weight W^T has the same blocks, so the Fprop FP8 copy serves both GEMMs."""
    w = torch.randn(300, 200)
    q, q_t = quantize(w, (128, 128)), quantize(w.T.contiguous(), (128, 128))
    assert torch.equal(q.t().data.view(torch.uint8), q_t.data.view(torch.uint8))
    assert torch.equal(q.t().scale, q_t.scale)
    row, row_t = quantize(w, (1, None)), quantize(w.T.contiguous(), (1, None))
    assert not torch.equal(row.t().dequantize(), row_t.dequantize())  # per-row scales do not transpose


@pytest.mark.parametrize("recipe", ["row", "tensor"])
def test_other_recipes_train_too(recipe):
    layer, x = layer_and_input(recipe=recipe)
    dy = torch.randn(2, 100, 320)
    layer(x).backward(dy)
    w, x2, dy2 = layer.weight.detach(), x.detach().reshape(-1, 384), dy.reshape(-1, 320)
    assert relative(x.grad.reshape(-1, 384), dy2 @ w) < 0.1
    assert relative(layer.weight.grad, dy2.T @ x2) < 0.1


def test_empty_input_from_an_idle_expert():
    layer, _ = layer_and_input()
    x = torch.zeros(0, 384, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == (0, 384) and torch.equal(layer.weight.grad, torch.zeros(320, 384))


def test_scaled_mm_backend_needs_an_fp8_gpu():
    layer = FP8Linear(128, 128, backend="scaled_mm")
    nn.init.normal_(layer.weight)
    with pytest.raises(RuntimeError, match="compute capability 8.9"):
        layer(torch.randn(4, 128))
    with pytest.raises(ValueError, match="backend must be"):
        FP8Linear(128, 128, backend="fp8")


def tiny_model(seed=0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.from_preset("tiny", **overrides)).eval()


def test_to_fp8_keeps_the_reports_high_precision_parts():
    model = tiny_model()
    linears = {name: m.weight for name, m in model.named_modules() if type(m) is nn.Linear}
    to_fp8(model)
    kept = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    converted = {name for name, m in model.named_modules() if isinstance(m, FP8Linear)}
    assert kept == {"head", "mtp.0.eh_proj"}
    assert converted == set(linears) - kept
    assert any(".experts.0.w1" in name for name in converted) and "layers.0.attn.wkv_b" in converted
    assert isinstance(model.embed, nn.Embedding) and all(type(m.gate) is Gate for m in model.modules()
                                                         if hasattr(m, "gate") and isinstance(m.gate, Gate))
    # The master weights are the same Parameters: an optimizer built before the swap still trains them.
    assert all(model.get_submodule(name).weight is weight for name, weight in linears.items())


def test_converted_model_stays_close_to_the_original():
    # Dense layers only: with MoE a perturbation can flip a token's expert choice (BF16 flips some too).
    model, tokens = tiny_model(n_dense_layers=4), torch.randint(0, 2048, (2, 32))
    with torch.no_grad():
        reference = model(tokens)
        out = to_fp8(model)(tokens)
    # Four layers of chained E4M3 products (3.7% each) on an untrained model: measured 8%.
    assert 0.01 < relative(out, reference) < 0.12


def test_fp8_weights_halve_the_memory_and_load_from_a_checkpoint():
    model, tokens = to_fp8(tiny_model()), torch.randint(0, 2048, (2, 32))
    with torch.no_grad():
        trained_path = model(tokens)
    stored = to_fp8(tiny_model(), fp8_weights=True)
    layers = [m for m in stored.modules() if isinstance(m, FP8Linear)]
    assert all(m.weight.dtype == torch.float8_e4m3fn and not m.weight.requires_grad for m in layers)
    fp8_bytes = sum(m.weight.nbytes + m.scale.nbytes for m in layers)
    bf16_bytes = sum(2 * m.weight.numel() for m in layers)
    assert 0.5 < fp8_bytes / bf16_bytes < 0.52  # 1 byte + one float32 per block (at most 128x64 in tiny)
    with torch.no_grad():
        assert torch.equal(stored(tokens), trained_path)  # the same FP8 codes and scales either way

    # A checkpoint's float8 weights and scales load into an FP8 model as they are.
    state = stored.state_dict()
    fresh = to_fp8(tiny_model(seed=1), fp8_weights=True)
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(tokens), trained_path)
    w = fresh.layers[0].attn.wkv_a
    assert torch.equal(dequantize_blockwise(w.weight, w.scale), dequantize_blockwise(*quantize_blockwise(
        tiny_model().layers[0].attn.wkv_a.weight.detach())))


def test_store_fp8_weight_checks_shapes():
    layer = FP8Linear(200, 576)
    q, scale = quantize_blockwise(torch.randn(576, 200))
    layer.store_fp8_weight(q, scale)
    assert layer.scale.shape == (5, 2)
    with pytest.raises(ValueError, match=r"expected shapes \(\(576, 200\), \(5, 2\)\)"):
        FP8Linear(200, 576).store_fp8_weight(q, scale[:4])


def test_fp8_training_loss_stays_within_1_percent_of_bf16():
    """tiny, 20 AdamW steps on stdlib bytes, same weights and batches; both under BF16 autocast.

    Measured gaps (FP8 - BF16) / BF16 over the last 5 steps, seeds 0/1/2: -1.2%, -0.4%, +0.05%: FP8 is
    never worse by more than 1%, and at this scale may even run slightly ahead (BF16 itself differs from
    FP32 by up to 0.5% here). The claim under test is the first: FP8 loses no more than 1%.
    """
    bf16 = train_bytes("tiny", "bf16", steps=20)
    fp8 = train_bytes("tiny", "fp8", steps=20)
    assert all(torch.isfinite(torch.tensor(run.losses)).all() for run in (bf16, fp8))
    assert fp8.losses[-1] < 0.7 * fp8.losses[0]  # it learns
    layers = [m for m in fp8.model.modules() if isinstance(m, FP8Linear)]
    assert layers and all(m.weight.dtype == torch.float32 for m in layers)  # FP32 master weights
    assert type(fp8.model.head) is nn.Linear  # the output head stays in high precision, as in the report
    gap = relative_loss_gap(bf16.losses, fp8.losses, last=5)
    assert gap < 0.01 and abs(gap) < 0.03


@pytest.mark.fp8
def test_tensor_core_layer_matches_the_simulated_one():
    layer, x = layer_and_input(tokens=512, in_features=1024, out_features=768)
    gpu = FP8Linear(1024, 768, backend="scaled_mm").cuda()
    with torch.no_grad():
        gpu.weight.copy_(layer.weight)
    x_gpu = x.detach().cuda().requires_grad_()
    dy = torch.randn(2, 256, 768)
    layer(x).backward(dy)
    gpu(x_gpu).backward(dy.cuda())
    assert relative(x_gpu.grad.cpu(), x.grad) < 2e-2
    assert relative(gpu.weight.grad.cpu(), layer.weight.grad) < 2e-2
