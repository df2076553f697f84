"""The pre-training objective of DeepSeek-V3: next-token loss, MTP losses, balance loss.

    L = L_main + lambda/D * sum_{k=1..D} L_MTP^k + sum_{MoE layers} L_Bal        (report eq. 25 and 17)

* ``L_main``: cross-entropy of the next token at every position.
* ``L_MTP^k`` (eq. 24): cross-entropy of MTP depth k, which predicts the token k+1 positions ahead
  (``mtp.mtp_logits``). lambda is ``config.mtp_loss_weight`` (0.3 for the first 10T tokens of V3,
  then 0.1). With D = 0 the loss is the plain model's.
* ``L_Bal`` (eq. 17-20): the complementary sequence-wise balance loss with a tiny alpha
  (``config.balance_loss_alpha`` = 1e-4), which each MoE layer leaves in ``MoE.balance_loss``
  during a training forward. The main balancing mechanism, the bias update, has no loss: see
  ``balancing.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import Transformer
from .moe import MoE
from .mtp import mtp_logits


@dataclass
class LossOutput:
    """``loss`` is what to back-propagate; the parts are returned for logging.

    loss: scalar = main + lambda/D * sum(mtp) + balance; main: scalar; mtp: one scalar per depth;
    balance: scalar, the sum over MoE layers (0 when alpha == 0, in eval mode, or without MoE).
    """

    loss: torch.Tensor
    main: torch.Tensor
    mtp: list[torch.Tensor]
    balance: torch.Tensor


def compute_loss(model: Transformer, batch: torch.Tensor) -> LossOutput:
    """All of DeepSeek-V3's training loss for one batch.

    batch: (batch, seq + 1) int64 token ids. The model reads ``batch[:, :-1]``; position i of the
    main model predicts ``batch[:, i + 1]`` and position i of MTP depth k predicts ``batch[:, i + k + 1]``.
    """
    if batch.dim() != 2 or batch.size(1) < 2:
        raise ValueError(f"batch must be (batch, seq + 1) token ids with seq >= 1, got shape {tuple(batch.shape)}")
    # --8<-- [start:compute_loss]
    inputs = batch[:, :-1]
    h = model.forward_hidden(inputs)
    main = cross_entropy(model.head(model.norm(h)), batch[:, 1:])
    mtp = [cross_entropy(logits, batch[:, k + 1:]) for k, logits in enumerate(mtp_logits(model, h, inputs), start=1)]
    balance_losses = [m.balance_loss for m in model.modules() if isinstance(m, MoE) and m.balance_loss is not None]
    balance = torch.stack(balance_losses).sum() if balance_losses else main.new_zeros(())
    loss = main + balance
    if mtp:
        loss = loss + model.config.mtp_loss_weight / len(mtp) * torch.stack(mtp).sum()
    return LossOutput(loss=loss, main=main, mtp=mtp, balance=balance)
    # --8<-- [end:compute_loss]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy. logits: (batch, seq, vocab), targets: (batch, seq) -> scalar (float32)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
