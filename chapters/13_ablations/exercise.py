"""Chapter 13 exercise: the measurements an ablation rests on, written as plain functions.

Fill in every function below, then grade your work with

    minideepseek grade 13        (or: pytest tests/exercises/test_13_ablations.py --student)

An ablation trains V3's choice and its alternatives (the variants) for the same training FLOPs,
from the same seeds, and compares them. These functions are its arithmetic: how many FLOPs a
token costs, how many steps spend a budget, how balanced the experts are (MaxVio), the auxiliary
loss V3 replaced, and the paired difference of two variants over seeds.
"""

import torch


def training_flops_per_token(activated_matrix_params: int, n_layers: int, n_heads: int, qk_head_dim: int,
                             v_head_dim: int, seq_len: int) -> float:
    """Training FLOPs of one token (forward + backward), the PaLM / nanoGPT convention:

        6 * N + 6 * L * H * (qk_head_dim + v_head_dim) * T

    N = activated_matrix_params: the weights one token multiplies (the input embedding, a lookup,
    excluded; only the top-k routed experts of an MoE layer); 6 = 2 FLOPs per multiply-add x 3
    (the forward pass, and the backward pass for the inputs and for the weights).
    L = n_layers attention layers, H = n_heads, T = seq_len: q k^T and p v of every layer over the
    whole sequence, NOT halved for the causal mask.
    Returns the number (an int or a float).
    """
    raise NotImplementedError("training_flops_per_token: 6 N plus the attention term, counted in full")


def iso_flop_steps(total_flops: float, tokens_per_step: int, flops_per_token: float) -> int:
    """The optimizer steps that spend a FLOP budget on one variant.

    A step trains tokens_per_step tokens at flops_per_token FLOPs each, so

        steps = total_flops / (tokens_per_step * flops_per_token)

    rounded to the nearest integer (Python's round), and at least 1 (every variant trains).
    Returns an int.
    """
    raise NotImplementedError("iso_flop_steps: the budget over the FLOPs of one step, rounded, at least 1")


def max_violation(loads: dict[str, torch.Tensor]) -> float | None:
    """MaxVio (Wang et al. 2024), the imbalance of the experts' loads, averaged over the MoE layers.

    loads: {layer name: (n_experts,) int64 counts of the tokens routed to each expert}. Per layer

        MaxVio = max_i load_i / mean_i load_i - 1

    (0: perfect balance; 1: the busiest expert gets twice its fair share). Compute it for each layer
    on its own, then return the plain mean over the layers, as a Python float. A layer that routed no
    token (all counts 0) is left out; return None when no layer is left (a dense model: ``{}``).
    The counts are integers: take the mean in floating point.
    """
    raise NotImplementedError("max_violation: max over mean minus 1, per layer, then the mean over layers")


def expert_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    """The expert-level auxiliary balance loss of DeepSeek-V2 (eq. 12-14) and GShard, the loss V3 removed.

    scores: (..., n_experts) the unbiased affinities s_{i,t}; indices: (..., k) the k experts each token
    chose. The leading dimensions ((tokens,) or (batch, seq)) all count as tokens: the loss pools
    EVERY token of the batch, not sequence by sequence. With T the number of tokens, E = n_experts
    and K = k:

        f_i = E / (K T) * (number of tokens t that chose expert i)
        P_i = 1/T * sum_t s_{i,t} / sum_j s_{j,t}
        L   = alpha * sum_i f_i P_i

    (a perfectly uniform router gives L = alpha). Returns a scalar tensor; gradients flow through P
    only (the counts come from indices).
    """
    raise NotImplementedError("expert_balance_loss: f_i from the whole batch's picks, P_i from the normalised scores")


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, float | int]:
    """The paired difference of two variants over seeds: a[seed] - b[seed] for every seed both have.

    a, b: {seed: value} (e.g. the validation bits per byte of each run); a seed only one of them has
    is ignored. Returns {"mean": mean of the differences, "std": their sample standard deviation
    (divide by n - 1; 0.0 when n = 1), "n": the number of seeds paired}.
    Raises ValueError when no seed is in both.
    """
    raise NotImplementedError("paired_difference: differences seed by seed, then their mean and sample std")
