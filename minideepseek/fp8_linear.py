"""FP8 linear layers for training and inference (DeepSeek-V3 report section 3.3).

In V3 training the three matrix products of every eligible linear layer run in FP8:

    Fprop  y  = x W^T      x: (tokens, in) in 1x128 tiles,     W: (out, in) in 128x128 blocks
    Dgrad  dx = dy W       dy: (tokens, out) in 1x128 tiles,   W^T: the same blocks, transposed
    Wgrad  dW = dy^T x     dy^T and x^T in 1x128 tiles along the *tokens*, i.e. 128x1 tiles of dy and x

Every scale lies along the contracted dimension, so each product is a block-scaled
GEMM (``fp8_gemm.fp8_matmul``). Around them everything stays in high precision:
the master weights and their gradients (fp32), the optimizer state, and the parts
the report keeps out of FP8 because they are cheap and sensitive (embedding, output
head, MoE gate, norms, attention softmax/QK^T/PV). The input x is saved for the
backward pass as its FP8 copy, 1 + 4/128 bytes per element instead of 2 (BF16).

For inference the weight can instead be *stored* in FP8 with its block scales, the
published checkpoint's format: half the bytes of BF16 (``FP8Linear.store_fp8_weight``,
``to_fp8(model, fp8_weights=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .fp8 import ACTIVATION_AMAX_EPS, WEIGHT_AMAX_EPS, Fp8Tensor, quantize, quantize_blockwise
from .fp8_gemm import blockwise_scaled_mm_works, fp8_hardware_available, fp8_matmul
from .moe import MoE

WEIGHT_BLOCK = (128, 128)
# Linears the published checkpoint keeps in BF16. The embedding, the MoE gate, the norms and the
# attention core are kept too, but they are not nn.Linear modules, so nothing has to skip them.
KEEP_HIGH_PRECISION = ("head", "eh_proj")


@dataclass(frozen=True)
class FP8Recipe:
    """Where the scales go. ``activation`` is the group of activations and gradients, ``weight`` of
    weights, both as (rows, cols) of the operand with the contracted dimension last; None spans a dimension.
    """

    name: str
    activation: tuple[int | None, int | None]
    weight: tuple[int | None, int | None]
    dtype: torch.dtype = torch.float8_e4m3fn  # the report uses E4M3 for every tensor, gradients included

    @property
    def weight_transposes_exactly(self) -> bool:
        """Square blocks (or one scale) transpose into the same quantisation of W^T: Dgrad reuses Fprop's FP8 W."""
        return self.weight[0] == self.weight[1]


RECIPES = {
    "block": FP8Recipe("block", (1, 128), (128, 128)),  # DeepSeek-V3
    "row": FP8Recipe("row", (1, None), (1, None)),  # per token x per output channel (torchao "rowwise")
    "tensor": FP8Recipe("tensor", (None, None), (None, None)),  # one scale per tensor (early FP8 recipes)
}


# --8<-- [start:function]
class FP8LinearFunction(torch.autograd.Function):
    """y = x W^T with Fprop, Dgrad and Wgrad as FP8 GEMMs.

    x: (tokens, in); weight: (out, in) high-precision master, or an ``Fp8Tensor`` (a stored, frozen
    FP8 weight: no weight gradient) -> y: (tokens, out) in ``out_dtype``.
    """

    @staticmethod
    def forward(ctx, x, weight, recipe: FP8Recipe, backend: str, out_dtype: torch.dtype):
        x_q = quantize(x, recipe.activation, recipe.dtype, amax_eps=ACTIVATION_AMAX_EPS)
        frozen = isinstance(weight, Fp8Tensor)
        w_q = weight if frozen else quantize(weight, recipe.weight, recipe.dtype)
        y = fp8_matmul(x_q, w_q, torch.float32, backend)
        # Cache x in FP8 (the report's low-precision activation storage), and W's FP8 copy for Dgrad.
        ctx.save_for_backward(x_q.data, x_q.scale, w_q.data, w_q.scale, *(() if frozen else (weight,)))
        ctx.groups = (x_q.group, w_q.group)
        ctx.recipe, ctx.backend, ctx.frozen = recipe, backend, frozen
        ctx.dtypes = (x.dtype, out_dtype)
        return y.to(out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x_data, x_scale, w_data, w_scale, *master = ctx.saved_tensors
        recipe, backend = ctx.recipe, ctx.backend
        (x_group, w_group), (x_dtype, out_dtype) = ctx.groups, ctx.dtypes

        def quantize_grad(t):  # gradients can be far below the activations' 1e-4 amax floor
            return quantize(t, recipe.activation, recipe.dtype, amax_eps=WEIGHT_AMAX_EPS)

        dx = dw = None
        if ctx.needs_input_grad[0]:  # Dgrad: dx = dy W, contracting over the output channels
            w_q = Fp8Tensor(w_data, w_scale, w_group)
            if ctx.frozen or recipe.weight_transposes_exactly:
                w_t = w_q.t()  # square blocks: W^T's blocks are W's, transposed
            else:
                w_t = quantize(master[0].t(), recipe.weight, recipe.dtype)
            # Written in the forward output's dtype, as nn.Linear's Dgrad under autocast (V3's: BF16).
            dx = fp8_matmul(quantize_grad(dy), w_t, out_dtype, backend).to(x_dtype)
        if not ctx.frozen and ctx.needs_input_grad[1]:  # Wgrad: dW = dy^T x, contracting over the tokens
            # Re-tile x from its cached FP8 copy: 1x128 along channels -> 1x128 along the tokens of x^T.
            x = Fp8Tensor(x_data, x_scale, x_group).dequantize()
            dw = fp8_matmul(quantize_grad(dy.t()), quantize_grad(x.t()), torch.float32, backend)
            dw = dw.to(master[0].dtype)  # FP32 weight gradients, as in the report
        return dx, dw, None, None, None
# --8<-- [end:function]


class FP8Linear(nn.Module):
    """A bias-free linear layer whose matrix products run in FP8 (a drop-in for ``nn.Linear(bias=False)``).

    The weight is either
    * trainable: ``weight`` is the high-precision master (out, in), quantised at every forward; or
    * stored: ``weight`` is float8_e4m3fn (out, in) and ``scale`` float32 (ceil(out/128), ceil(in/128)),
      frozen (official names ``weight``/``scale``; hub ``weight``/``weight_scale_inv``).

    backend: "simulated" (anywhere) or "scaled_mm" (FP8 tensor cores; a product whose shape they cannot
    take is simulated). recipe: a key of ``RECIPES``.
    forward(x: (..., in_features)) -> (..., out_features)
    """

    def __init__(self, in_features: int, out_features: int, backend: str = "simulated", recipe: str = "block",
                 device=None, dtype=None):
        super().__init__()
        if backend not in ("simulated", "scaled_mm"):
            raise ValueError(f"FP8Linear backend must be 'simulated' or 'scaled_mm', got {backend!r}")
        if recipe not in RECIPES:
            raise ValueError(f"FP8Linear recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
        self.in_features, self.out_features = in_features, out_features
        self.backend, self.recipe = backend, RECIPES[recipe]
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.register_parameter("scale", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str = "simulated", recipe: str = "block",
                    fp8_weights: bool = False) -> FP8Linear:
        """Wrap an existing nn.Linear. The weight Parameter is shared, not copied, so an optimizer
        built before the swap keeps updating it."""
        if linear.bias is not None:
            raise ValueError("FP8Linear has no bias (no DeepSeek-V3 linear layer has one)")
        module = cls(linear.in_features, linear.out_features, backend, recipe, device="meta")
        module.weight = linear.weight
        if fp8_weights:
            module.store_fp8_weight()
        return module

    @property
    def stores_fp8(self) -> bool:
        return self.scale is not None

    def store_fp8_weight(self, weight: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> None:
        """Freeze the weight in FP8 with 128x128 block scales (the checkpoint's format).

        Without arguments the current master weight is quantised; with ``weight`` (float8, (out, in)) and
        ``scale`` (its ``weight_scale_inv``) a checkpoint's tensors are taken as they are.
        """
        if weight is None:
            weight, scale = quantize_blockwise(self.weight.detach())
        expected = ((self.out_features, self.in_features),
                    (-(-self.out_features // WEIGHT_BLOCK[0]), -(-self.in_features // WEIGHT_BLOCK[1])))
        found = (tuple(weight.shape), tuple(scale.shape) if scale is not None else None)
        if found != expected or weight.dtype != torch.float8_e4m3fn:
            raise ValueError(f"FP8 weight/scale of shapes {found} and dtype {weight.dtype}; expected shapes "
                             f"{expected} and torch.float8_e4m3fn")
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.scale = nn.Parameter(scale.float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "scaled_mm" and not fp8_hardware_available(x.device):
            raise RuntimeError(f"FP8Linear backend 'scaled_mm' needs a CUDA GPU with compute capability 8.9+, "
                               f"got input on {x.device}; use backend='simulated'")
        weight = Fp8Tensor(self.weight, self.scale, WEIGHT_BLOCK) if self.stores_fp8 else self.weight
        gemm_backend = "auto" if self.backend == "scaled_mm" else "simulated"
        # Write what nn.Linear would: the autocast dtype under autocast (V3's FP8 GEMMs output BF16), else x's.
        device = x.device.type
        out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        y = FP8LinearFunction.apply(x.reshape(-1, self.in_features), weight, self.recipe, gemm_backend, out_dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        stored = ", weights stored in FP8" if self.stores_fp8 else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"backend={self.backend}, recipe={self.recipe.name}{stored}")


# --8<-- [start:to_fp8]
def to_fp8(model: nn.Module, backend: str = "auto", recipe: str = "auto", fp8_weights: bool = False) -> nn.Module:
    """Swap every eligible ``nn.Linear`` of ``model`` for an ``FP8Linear``, in place; returns the model.

    Eligible: every linear except ``KEEP_HIGH_PRECISION`` (the output head and MTP's ``eh_proj``, BF16 in
    the checkpoint). backend "auto": "scaled_mm" when the model sits on an FP8 GPU, else "simulated".
    recipe "auto": "block" (DeepSeek's 1x128 / 128x128), or "row" on a GPU whose torch cannot run
    block-scaled products. fp8_weights: store the weights in FP8 for inference (frozen).
    """
    device = next(model.parameters()).device
    if backend == "auto":
        backend = "scaled_mm" if fp8_hardware_available(device) else "simulated"
    if recipe == "auto":
        block_ok = backend == "simulated" or blockwise_scaled_mm_works(device, WEIGHT_BLOCK)
        recipe = "block" if block_ok else "row"
    for parent in list(model.modules()):
        if isinstance(parent, MoE):
            parent.experts_impl = "loop"  # the grouped path multiplies the stacked weights itself, in BF16
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and name not in KEEP_HIGH_PRECISION:
                setattr(parent, name, FP8Linear.from_linear(child, backend, recipe, fp8_weights))
    return model
# --8<-- [end:to_fp8]
