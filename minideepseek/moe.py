"""DeepSeekMoE: shared experts plus many small routed experts (V3 report section 2.1.2).

A dense feed-forward layer spends all its parameters on every token. DeepSeekMoE
splits the layer into many small experts, and a router (the *gate*) sends each
token to ``n_activated_experts`` of them (8 of 256 in V3). One or more *shared*
experts see every token and hold common knowledge, so the routed ones can
specialise. The output for token t (eq. 12) is

    h'_t = u_t + sum_i Shared_i(u_t) + sum_i g_{i,t} Routed_i(u_t)

The gate (eq. 13-16), in V3's form:

    s_{i,t} = sigmoid(u_t . e_i)                 affinity of token t for expert i
    choose   top-k of  s_{i,t} + b_i             the bias b only *selects* experts
    g_{i,t} = s_{i,t} / sum_{chosen} s_{j,t}     weights come from the unbiased scores
    g_{i,t} *= route_scale                       (2.5 in V3)

The bias b is the **auxiliary-loss-free balancing** of the report: after each
training step an overloaded expert's bias goes down by gamma and an underloaded
one's goes up, so the router balances load without a loss term that fights the
language-modelling loss. It is never trained by gradient.

**Group-limited routing** (node-limited in the report): the experts form
``n_expert_groups`` groups (one per node); a token may only use experts in its
``n_limited_groups`` best groups, a group scored by the sum of its two best biased
affinities (V3) or its single best one (V2, no bias). This bounds how many nodes
a token's activations travel to.

Official names: ``Gate`` (weight, bias), ``Expert``/``MLP`` (w1, w2, w3), ``MoE``
(gate, experts, shared_experts). Hub names: ``mlp.gate.weight``,
``mlp.gate.e_score_correction_bias``, ``mlp.experts.N.{gate,up,down}_proj``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class MLP(nn.Module):
    """SwiGLU feed-forward: w2(silu(w1 x) * w3 x) (official ``MLP`` and ``Expert``).

    w1 is the hub's gate_proj, w3 its up_proj, w2 its down_proj.
    x: (..., dim) -> (..., dim)
    """

    def __init__(self, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)
        self.w2 = nn.Linear(inter_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, inter_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Gate(nn.Module):
    """The router: which experts each token uses, and with what weight.

    forward(x: (tokens, dim)) -> weights: (tokens, n_activated_experts) in x's dtype,
                                 indices: (tokens, n_activated_experts) int64,
                                 scores: (tokens, n_routed_experts) float32, the unbiased affinities
                                 (the sequence-wise balance loss needs them).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.topk = config.n_activated_experts
        self.n_groups = config.n_expert_groups
        self.topk_groups = config.n_limited_groups
        self.score_func = config.score_func
        self.route_scale = config.route_scale
        self.weight = nn.Parameter(torch.randn(config.n_routed_experts, config.dim) * config.init_std)
        # float32 always: a bf16 bias would round away the +-0.001 updates of the balancing rule.
        self.bias = (nn.Parameter(torch.zeros(config.n_routed_experts, dtype=torch.float32), requires_grad=False)
                     if config.gate_bias else None)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) must not cast the bias (transformers: _keep_in_fp32_modules_strict).
        super()._apply(fn, recurse)
        if self.bias is not None and self.bias.dtype != torch.float32:
            self.bias.data = self.bias.data.float()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = F.linear(x.float(), self.weight.float())  # (tokens, experts), routing decided in fp32
        scores = logits.sigmoid() if self.score_func == "sigmoid" else logits.softmax(dim=-1)
        original_scores = scores
        if self.bias is not None:
            scores = scores + self.bias  # used only to choose, never as a weight
        if self.n_groups > 1:
            scores = self.limit_to_best_groups(scores)
        indices = scores.topk(self.topk, dim=-1).indices
        weights = original_scores.gather(1, indices)
        if self.score_func == "sigmoid":
            weights = weights / weights.sum(dim=-1, keepdim=True)  # eq. 15: normalise over the chosen
        weights = weights * self.route_scale
        return weights.to(x.dtype), indices, original_scores

    def limit_to_best_groups(self, scores: torch.Tensor) -> torch.Tensor:
        """Set the scores of all experts outside each token's ``topk_groups`` best groups to -inf.

        scores: (tokens, experts) -> (tokens, experts)
        """
        grouped = scores.unflatten(-1, (self.n_groups, -1))  # (tokens, groups, experts_per_group)
        if self.bias is None:
            group_scores = grouped.amax(dim=-1)  # V2: a group is as good as its best expert
        else:
            group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # V3: its two best experts
        best_groups = group_scores.topk(self.topk_groups, dim=-1).indices
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best_groups, True)
        # -inf, not 0: biased sigmoid scores can be negative, and a 0 would then beat them.
        return grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).flatten(1)


class MoE(nn.Module):
    """Routed experts plus shared experts (official ``MoE``; hub ``DeepseekV3MoE``).

    forward(x: (batch, seq, dim)) -> (batch, seq, dim)

    During training, ``tokens_per_expert`` accumulates how many tokens each routed
    expert received since it was last reset; the auxiliary-loss-free bias update reads it.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_routed_experts = config.n_routed_experts
        self.gate = Gate(config)
        self.experts = nn.ModuleList(MLP(config.dim, config.moe_inter_dim) for _ in range(config.n_routed_experts))
        # The shared experts of one layer are a single MLP of n_shared_experts times the width (as released).
        self.shared_experts = MLP(config.dim, config.n_shared_experts * config.moe_inter_dim)
        self.register_buffer("tokens_per_expert", torch.zeros(config.n_routed_experts), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (tokens, dim)
        weights, indices, _ = self.gate(x)
        routed = self.route(x, weights, indices)
        return (routed + self.shared_experts(x)).view(shape)

    def route(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """sum_k weights[t, k] * Expert_{indices[t, k]}(x[t]) for every token t, vectorised over tokens.

        The (token, choice) pairs are sorted by expert, so each expert runs once on one contiguous
        slice of its tokens; the results are scaled and added back with ``index_add_``.
        x: (tokens, dim); weights, indices: (tokens, k) -> (tokens, dim)
        """
        k = indices.size(1)
        expert_of_pair = indices.flatten()  # (tokens * k,)
        order = expert_of_pair.argsort(stable=True)
        token_of_pair = order // k  # which token each sorted pair belongs to
        counts = torch.bincount(expert_of_pair, minlength=self.n_routed_experts)
        if self.training:
            self.tokens_per_expert += counts.to(self.tokens_per_expert.dtype)
        outputs = [expert(chunk) for expert, chunk in zip(self.experts, x[token_of_pair].split(counts.tolist()))]
        weighted = torch.cat(outputs) * weights.flatten()[order].unsqueeze(-1)
        return torch.zeros_like(x).index_add_(0, token_of_pair, weighted)
