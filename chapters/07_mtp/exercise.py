"""Chapter 07 exercise: Multi-Token Prediction and the training loss, written as plain functions.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_07_mtp.py --student

Equation numbers are those of the DeepSeek-V3 report (section 2.2 for MTP, 2.1.2 for the
balance loss). Token batches have the shape the loss uses: (batch, seq + 1) ids, of which
the model reads the first ``seq``.
"""

from collections.abc import Callable

import torch

MTPStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (h, next_embeddings, freqs_cis) -> h^k


def mtp_combine(h: torch.Tensor, next_embeddings: torch.Tensor, enorm_weight: torch.Tensor,
                hnorm_weight: torch.Tensor, eh_proj_weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The input of MTP module k (eq. 21): eh_proj applied to the two RMS-normalised halves.

    h: (batch, seq, dim) the previous depth's hidden states h^{k-1};
    next_embeddings: (batch, seq, dim) Emb(t_{i+k}); enorm_weight, hnorm_weight: (dim,);
    eh_proj_weight: (dim, 2 * dim) in nn.Linear layout. RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight.
    Concatenate in the order of the released weights: the normalised EMBEDDING first, then h.
    Returns (batch, seq, dim).
    """
    raise NotImplementedError("mtp_combine: eh_proj([enorm(emb); hnorm(h)])")


def mtp_targets(batch: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens depth k embeds and which it must predict (eq. 21-24).

    batch: (batch, seq + 1) token ids; k >= 1. At position i, depth k embeds token i+k and predicts
    token i+k+1; keep only the positions i whose target exists.
    Returns (embedded, targets), both (batch, seq - k) int64.
    """
    raise NotImplementedError("mtp_targets: the tokens k and k+1 positions ahead, for every position that has them")


def mtp_chain(h: torch.Tensor, tokens: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor],
              modules: list[MTPStep], freqs_cis: torch.Tensor) -> list[torch.Tensor]:
    """Run the D MTP modules one after the other (eq. 21-22), each on the previous one's output.

    h: (batch, seq, dim) the main model's hidden states h^0; tokens: (batch, seq) the input tokens;
    embed: token ids -> embeddings (the main model's, shared); modules[k-1](h^{k-1}, Emb(t_{i+k}),
    freqs_cis[:length]) -> h^k for depth k; freqs_cis: (seq, rope_dim/2) the RoPE table of positions 0..seq-1.
    Depth k runs on the first seq - k positions. Returns [h^1, ..., h^D], h^k: (batch, seq - k, dim).
    """
    raise NotImplementedError("mtp_chain: truncate, embed the tokens k ahead, call module k, repeat")


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    """The complementary sequence-wise balance loss (eq. 17-20), averaged over the sequences of the batch.

    scores: (batch, seq, experts) the unbiased affinities s_{i,t}; indices: (batch, seq, k) the chosen experts.
    Per sequence (T = seq, N_r experts, K_r = k):
        f_i = N_r / (K_r T) * (number of tokens t that chose expert i)
        P_i = 1/T * sum_t s_{i,t} / sum_j s_{j,t}
        L   = alpha * sum_i f_i P_i
    Returns a scalar tensor (mean of L over the batch); gradients flow through P only.
    """
    raise NotImplementedError("sequence_balance_loss: f_i from the picks, P_i from the normalised scores")


def compute_loss(main_logits: torch.Tensor, mtp_logits: list[torch.Tensor], batch: torch.Tensor,
                 balance_losses: list[torch.Tensor], mtp_weight: float
                 ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """DeepSeek-V3's training loss for one batch (eq. 24-25 and 17):

        L = L_main + mtp_weight / D * sum_{k=1..D} L_MTP^k + sum of the MoE layers' balance losses

    batch: (batch, seq + 1) token ids, of which the model read the first seq;
    main_logits: (batch, seq, vocab), position i predicts token i + 1;
    mtp_logits: [logits^1, ..., logits^D], logits^k: (batch, seq - k, vocab), position i predicts token i + k + 1;
    balance_losses: one scalar per MoE layer (the MTP module's included), possibly none;
    mtp_weight: lambda (0.3 for V3's first 10T tokens, then 0.1). D = len(mtp_logits), possibly 0.
    Every cross-entropy is the mean over its tokens, computed in float32.
    Returns (L, L_main, [L_MTP^1, ..., L_MTP^D]), all scalar tensors.
    """
    raise NotImplementedError("compute_loss: cross-entropies with the right shifts, lambda / D, plus the balance losses")
