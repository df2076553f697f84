"""Chapter 04 exercise: DeepSeekMoE and its router, written as plain functions.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_04_moe.py --student

Weights are passed in, in ``nn.Linear`` layout (out_features, in_features). One expert is a
tuple (w1, w2, w3): w1 (inter, dim) is the hub's gate_proj, w3 (inter, dim) its up_proj and
w2 (dim, inter) its down_proj. Equation numbers are those of the DeepSeek-V3 report, section 2.1.2.
"""

import torch

from minideepseek.config import ModelConfig

Expert = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (w1, w2, w3)


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """One expert (and the dense MLP, and the shared expert): w2 (silu(w1 x) * (w3 x)).

    x: (..., dim) -> (..., dim)
    """
    raise NotImplementedError("swiglu: the gated feed-forward of every DeepSeek MLP")


def gate_route(scores: torch.Tensor, bias: torch.Tensor, n_groups: int, topk_groups: int, topk: int,
               route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3's routing decision for every token (eq. 13-16 with node-limited routing).

    scores: (tokens, experts) the unbiased sigmoid affinities s_{i,t}; bias: (experts,) b_i.
    1. biased = s + b (used ONLY to choose);
    2. split the experts into ``n_groups`` equal, contiguous groups; a group's score is the sum of its
       two highest biased scores; keep the ``topk_groups`` best groups, exclude every other expert
       (careful: biased scores can be negative);
    3. choose the ``topk`` experts with the highest biased scores among those kept;
    4. weights = their UNBIASED scores, divided by their sum, times ``route_scale``.
    Returns weights: (tokens, topk) float32 and indices: (tokens, topk) int64 (in any order).
    """
    raise NotImplementedError("gate_route: bias to choose, groups, top-k, weights from the unbiased scores")


def moe_forward_naive(x: torch.Tensor, gate_weight: torch.Tensor, gate_bias: torch.Tensor, experts: list[Expert],
                      shared_expert: Expert, config: ModelConfig) -> torch.Tensor:
    """A DeepSeekMoE layer, one token at a time (eq. 12): shared(u_t) + sum_i g_{i,t} Routed_i(u_t).

    x: (tokens, dim); gate_weight: (n_routed_experts, dim) the expert centroids e_i;
    gate_bias: (n_routed_experts,); experts: n_routed_experts tuples (w1, w2, w3);
    shared_expert: one tuple (the n_shared_experts shared experts stored as one wider MLP).
    Affinities s = sigmoid(x e_i) computed in float32; routing with ``gate_route`` and the config's
    n_expert_groups, n_limited_groups, n_activated_experts and route_scale. Returns (tokens, dim).
    The MoE layer does NOT add the residual u_t itself: the block does.
    """
    raise NotImplementedError("moe_forward_naive: route each token, sum its weighted experts, add the shared one")


def bias_update(bias: torch.Tensor, load: torch.Tensor, gamma: float) -> torch.Tensor:
    """The auxiliary-loss-free balancing step, after a training step (section 2.1.2).

    bias: (experts,) float32; load: (experts,) tokens each expert received in the step.
    An expert above the mean load is overloaded: its bias goes down by gamma; below the mean:
    up by gamma; exactly at the mean: unchanged. Returns the new bias (float32); ``bias`` is not modified.
    """
    raise NotImplementedError("bias_update: move each bias by gamma against the sign of its load error")
