"""Switch a model between its readable reference paths and its fast paths.

Every module computes the same function either way (the tests check it):

* attention (``MLA.backend``): ``"eager"`` writes softmax(q k^T) v out; ``"sdpa"`` calls PyTorch's
  fused ``scaled_dot_product_attention`` (cuDNN on an H100, since flash refuses MLA's 192/128
  head sizes); ``"sdpa_padded"`` pads V to 192 so that flash attention can run it.
* routed experts (``MoE.experts_impl``): ``"loop"`` calls each expert on its tokens; ``"grouped"``
  runs all experts in one grouped matrix multiply per projection (``moe.grouped_mm``).
"""

from __future__ import annotations

from torch import nn

from .attention import MLA
from .moe import MoE

ATTENTION_BACKENDS = ("eager", "sdpa", "sdpa_padded")
EXPERTS_IMPLS = ("loop", "grouped")


def configure_speed(model: nn.Module, attention: str = "sdpa", experts: str = "grouped") -> nn.Module:
    """Set every MLA's backend and every MoE's experts path in ``model`` (in place); returns the model.

    ``configure_speed(model, "eager", "loop")`` restores the reference paths.
    """
    if attention not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {attention!r}")
    if experts not in EXPERTS_IMPLS:
        raise ValueError(f"experts must be one of {EXPERTS_IMPLS}, got {experts!r}")
    for module in model.modules():
        if isinstance(module, MLA):
            module.backend = attention
        elif isinstance(module, MoE):
            module.experts_impl = experts
    return model
