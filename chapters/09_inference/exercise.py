"""Chapter 09 exercise: decoding with MLA's latent cache, and verifying speculative drafts.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_09_inference.py --student      (or: minideepseek grade 09)

Shapes follow the package (minideepseek/kv_cache.py, minideepseek/generation.py). ``wkv_b`` is
the up-projection in nn.Linear layout, (n_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank),
whose rows are, head after head, [k_nope rows | v rows]: W_UK and W_UV of head i.
"""

import torch


def absorbed_decode_attention(q_nope: torch.Tensor, q_pe: torch.Tensor, latent_cache: torch.Tensor,
                              pe_cache: torch.Tensor, lengths: torch.Tensor, wkv_b: torch.Tensor,
                              qk_nope_head_dim: int, scale: float) -> torch.Tensor:
    """One decode step of MLA attention read straight from the latent cache, never expanding it.

    q_nope: (batch, heads, qk_nope_head_dim) and q_pe: (batch, heads, qk_rope_head_dim), the new
    token's query parts (q_pe already rotated); latent_cache: (batch, max_len, kv_lora_rank) the cached
    kv_norm(c_KV); pe_cache: (batch, max_len, qk_rope_head_dim) the cached rotated k_pe;
    lengths: (batch,) int64, row b attends to its first lengths[b] cache slots only (later slots hold
    garbage); wkv_b as in the module docstring; scale: the softmax scale.

    score_t = (W_UK^T q_nope) . c_t + q_pe . k_pe_t, times scale; p = softmax over the visible slots;
    output = W_UV (sum_t p_t c_t). Returns (batch, heads, v_head_dim).
    The grader watches the tensors you build: per-head keys or values for every cache slot fail, even with
    the right numbers.
    """
    raise NotImplementedError("absorbed_decode_attention: fold W_UK into the query, attend over the latent, "
                              "then apply W_UV once")


def greedy_verify(draft: torch.Tensor, logits: torch.Tensor, next_logits: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check greedy drafts: the main model read [t_n, draft] and returned logits at both positions.

    draft: (batch,) the MTP module's guess for token n+1; logits: (batch, vocab) the main model's logits
    at position n (its own choice for n+1); next_logits: (batch, vocab) at position n+1 (its choice for
    n+2, meaningful only if the draft was right).
    Returns accepted: (batch,) bool, the draft equals the main model's greedy choice; and
    bonus: (batch,) int64, the token that follows the accepted ones: the choice for n+2 where
    accepted, otherwise the main model's own choice for n+1.
    """
    raise NotImplementedError("greedy_verify: compare the draft with the argmax at n, pick the bonus token")


def speculative_acceptance(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative-sampling rule that keeps the main model's distribution.

    p: (batch, vocab) the main model's probabilities for the drafted position; q: (batch, vocab) the
    draft model's, from which ``draft`` (batch,) was sampled.
    Returns accept_probability: (batch,) = min(1, p[draft] / q[draft]); and
    residual: (batch, vocab) the distribution to resample from after a rejection,
    max(0, p - q) normalised to sum to 1 (use p itself where p == q and nothing is left).
    """
    raise NotImplementedError("speculative_acceptance: min(1, p/q) at the draft, and normalise max(0, p - q)")
