"""Chapter 09 reference solutions: decoding from the latent cache, verifying drafts (see exercise.py)."""

import torch


def absorbed_decode_attention(q_nope: torch.Tensor, q_pe: torch.Tensor, latent_cache: torch.Tensor,
                              pe_cache: torch.Tensor, lengths: torch.Tensor, wkv_b: torch.Tensor,
                              qk_nope_head_dim: int, scale: float) -> torch.Tensor:
    heads, rank = q_nope.size(1), latent_cache.size(-1)
    per_head = wkv_b.view(heads, -1, rank)
    w_uk, w_uv = per_head[:, :qk_nope_head_dim], per_head[:, qk_nope_head_dim:]
    q_latent = torch.einsum("bhd,hdc->bhc", q_nope, w_uk)  # W_UK^T q_nope, 512 wide per head
    scores = (torch.einsum("bhc,btc->bht", q_latent, latent_cache)
              + torch.einsum("bhr,btr->bht", q_pe, pe_cache)) * scale
    visible = torch.arange(latent_cache.size(1), device=lengths.device) < lengths.view(-1, 1, 1)
    probs = scores.float().masked_fill(~visible, float("-inf")).softmax(dim=-1).to(latent_cache.dtype)
    latent_out = torch.einsum("bht,btc->bhc", probs, latent_cache)  # sum_t p_t c_t
    return torch.einsum("bhc,hdc->bhd", latent_out, w_uv)  # W_UV, once


def greedy_verify(draft: torch.Tensor, logits: torch.Tensor, next_logits: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    choice = logits.argmax(dim=-1)
    accepted = draft == choice
    return accepted, torch.where(accepted, next_logits.argmax(dim=-1), choice)


def speculative_acceptance(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(draft.numel(), device=draft.device)
    accept = (p[rows, draft] / q[rows, draft]).clamp(max=1)
    residual = (p - q).clamp(min=0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p)
    return accept, residual / residual.sum(-1, keepdim=True)
