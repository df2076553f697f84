"""Switch a model between its readable reference paths and its fast paths.

Every module computes the same function either way (the tests check it):

* attention (``MLA.backend``): ``"eager"`` writes softmax(q k^T) v out; ``"sdpa"`` calls PyTorch's
  fused ``scaled_dot_product_attention`` (cuDNN on an H100, since flash refuses MLA's 192/128
  head sizes); ``"sdpa_padded"`` pads V to 192 so that flash attention can run it.
* routed experts (``MoE.experts_impl``): ``"loop"`` calls each expert on its tokens; ``"grouped"``
  runs all experts in one grouped matrix multiply per projection (``moe.grouped_mm``).

``"auto"`` (the default of ``train`` and ``ablate``) picks the fastest paths for the device by rule
(``auto_paths``): SDPA everywhere; grouped experts where ``torch._grouped_mm`` runs (CUDA, and the
CPU with torch >= 2.9, where the grouped path no longer copies the weights on each call), the loop
elsewhere (MPS, older CPUs builds). ``grpo`` keeps the reference paths: its policies are too small
to run faster on the fast paths (measured on two CPU cores), and the reference paths keep its recorded
runs bit-for-bit reproducible.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import MLA
from .baselines import StandardAttention
from .moe import MoE

ATTENTION_BACKENDS = ("auto", "eager", "sdpa", "sdpa_padded")
EXPERTS_IMPLS = ("auto", "loop", "grouped")


def auto_paths(device: torch.device | str) -> tuple[str, str]:
    """(attention, experts): the fastest paths on ``device``, by rule (see the module docstring)."""
    device = torch.device(device)
    new_torch = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 9)
    grouped = hasattr(torch, "_grouped_mm") and (device.type == "cuda" or (device.type == "cpu" and new_torch))
    return "sdpa", "grouped" if grouped else "loop"


def configure_speed(model: nn.Module, attention: str = "sdpa", experts: str | None = None,
                    device: torch.device | str | None = None) -> nn.Module:
    """Set every MLA's backend and every MoE's experts path in ``model`` (in place); returns the model.

    ``configure_speed(model, "eager", "loop")`` restores the reference paths; ``configure_speed(model,
    "auto")`` picks the fastest for ``device`` (default: where the model's parameters are).
    ``experts`` defaults to "auto" with ``attention="auto"``, else to "grouped".
    """
    experts = experts if experts is not None else ("auto" if attention == "auto" else "grouped")
    if "auto" in (attention, experts):
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        best_attention, best_experts = auto_paths(device)
        attention = best_attention if attention == "auto" else attention
        experts = best_experts if experts == "auto" else experts
    if attention not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {attention!r}")
    if experts not in EXPERTS_IMPLS:
        raise ValueError(f"experts must be one of {EXPERTS_IMPLS}, got {experts!r}")
    for module in model.modules():
        if isinstance(module, (MLA, StandardAttention)):
            module.backend = attention
        elif isinstance(module, MoE):
            module.experts_impl = experts
    return model
