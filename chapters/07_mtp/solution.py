"""Chapter 07 reference solutions (graded by tests/exercises/test_07_mtp.py)."""

from collections.abc import Callable

import torch

MTPStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def mtp_combine(h: torch.Tensor, next_embeddings: torch.Tensor, enorm_weight: torch.Tensor,
                hnorm_weight: torch.Tensor, eh_proj_weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    both = torch.cat([rms_norm(next_embeddings, enorm_weight, eps), rms_norm(h, hnorm_weight, eps)], dim=-1)
    return both @ eh_proj_weight.T


def mtp_targets(batch: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    seq = batch.size(1) - 1
    return batch[:, k:seq], batch[:, k + 1:]


def mtp_chain(h: torch.Tensor, tokens: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor],
              modules: list[MTPStep], freqs_cis: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    for k, module in enumerate(modules, start=1):
        length = tokens.size(1) - k
        h = module(h[:, :length], embed(tokens[:, k:]), freqs_cis[:length])
        outputs.append(h)
    return outputs


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    n_experts, k, seq = scores.size(-1), indices.size(-1), scores.size(-2)
    picks = torch.zeros_like(scores).scatter_(-1, indices, 1.0).sum(dim=1)  # (batch, experts)
    f = picks * n_experts / (k * seq)
    p = (scores / scores.sum(-1, keepdim=True)).mean(dim=1)
    return alpha * (f * p).sum(-1).mean()


def compute_loss(main_logits: torch.Tensor, mtp_logits: list[torch.Tensor], batch: torch.Tensor,
                 balance_losses: list[torch.Tensor], mtp_weight: float
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    def cross_entropy(logits, targets):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    main = cross_entropy(main_logits, batch[:, 1:])
    mtp = [cross_entropy(logits, batch[:, k + 1:]) for k, logits in enumerate(mtp_logits, start=1)]
    loss = main + sum(balance_losses, main.new_zeros(()))
    if mtp:
        loss = loss + mtp_weight / len(mtp) * torch.stack(mtp).sum()
    return loss, main, mtp
