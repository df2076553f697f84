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

    # --8<-- [start:mlp_forward]
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
    # --8<-- [end:mlp_forward]


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
        # float32 always: in bf16 a +-0.001 update is rounded away once |bias| >= 0.5 (spacing 2^-8), and
        # near 0.3 it is rounded up to a whole step of +-2^-9 = 0.00195, twice its size.
        self.bias = (nn.Parameter(torch.zeros(config.n_routed_experts, dtype=torch.float32), requires_grad=False)
                     if config.gate_bias else None)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) must not cast the bias (transformers: _keep_in_fp32_modules_strict).
        super()._apply(fn, recurse)
        if self.bias is not None and self.bias.dtype != torch.float32:
            self.bias.data = self.bias.data.float()
        return self

    # --8<-- [start:gate_forward]
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Routing is decided in fp32, autocast or not: under torch.autocast a linear layer casts its
        # inputs back to bf16 whatever their dtype, so the .float() casts alone would not be enough.
        # (transformers' DeepseekV3TopkRouter casts to fp32 the same way but does not leave autocast;
        # the official inference code runs the gate in the weights' bf16, without autocast.)
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(x.float(), self.weight.float())  # (tokens, experts)
        scores = logits.sigmoid() if self.score_func == "sigmoid" else logits.softmax(dim=-1)
        original_scores = scores
        if self.bias is not None:
            scores = scores + self.bias  # used only to choose, never as a weight
        if self.n_groups > 1:
            scores = self.limit_to_best_groups(scores)
        indices = scores.topk(self.topk, dim=-1).indices
        weights = original_scores.gather(1, indices)
        if self.score_func == "sigmoid":
            weights = weights / weights.sum(dim=-1, keepdim=True)  # eq. 13: normalise over the chosen
        weights = weights * self.route_scale
        return weights.to(x.dtype), indices, original_scores
    # --8<-- [end:gate_forward]

    # --8<-- [start:limit_to_best_groups]
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
    # --8<-- [end:limit_to_best_groups]


class MoE(nn.Module):
    """Routed experts plus shared experts (official ``MoE``; hub ``DeepseekV3MoE``).

    forward(x: (batch, seq, dim)) -> (batch, seq, dim)

    During training, ``tokens_per_expert`` accumulates how many tokens each routed
    expert received since it was last reset; the auxiliary-loss-free bias update
    (``balancing.update_expert_biases``) reads it. When ``config.balance_loss_alpha > 0``,
    a training forward also leaves the sequence-wise balance loss of its batch in
    ``balance_loss`` (``None`` otherwise); ``losses.compute_loss`` adds it to the loss.

    ``experts_impl`` chooses how the routed experts run: ``"loop"`` (the readable
    reference: one call per expert) or ``"grouped"`` (one grouped matrix multiply per
    projection, see ``grouped_mm``). Both compute the same function. ``sort_pairs`` and
    ``run_experts`` are the one dispatch path: the tensor- and expert-parallel layers
    (``parallel.ParallelMoE``, ``parallel.ExpertParallelMoE``) call them on the experts their rank owns.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_routed_experts = config.n_routed_experts
        self.balance_loss_alpha = config.balance_loss_alpha
        self.expert_balance_loss_alpha = config.expert_balance_loss_alpha  # 0 in V3 (a V2 / GShard baseline)
        self.experts_impl = "loop"
        self.gate = Gate(config)
        self.experts = nn.ModuleList(MLP(config.dim, config.moe_inter_dim) for _ in range(config.n_routed_experts))
        # The shared experts of one layer are a single MLP of n_shared_experts times the width (as released).
        self.shared_experts = (MLP(config.dim, config.n_shared_experts * config.moe_inter_dim)
                               if config.n_shared_experts else None)
        # int64, so that model.to(torch.bfloat16) cannot round the counts (bf16 holds integers exactly only to 256).
        self.register_buffer("tokens_per_expert", torch.zeros(config.n_routed_experts, dtype=torch.long),
                             persistent=False)
        self.balance_loss: torch.Tensor | None = None

    # --8<-- [start:moe_forward]
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (tokens, dim)
        weights, indices, scores = self.gate(x)
        self.balance_loss = None
        if self.training and self.balance_loss_alpha > 0:
            seq = shape[-2]  # a 2-D input (tokens, dim) counts as one sequence
            self.balance_loss = sequence_balance_loss(scores.view(-1, seq, self.n_routed_experts),
                                                      indices.view(-1, seq, indices.size(1)), self.balance_loss_alpha)
        if self.training and self.expert_balance_loss_alpha > 0:  # the ablation's V2 / GShard baseline
            batch_loss = expert_balance_loss(scores, indices, self.expert_balance_loss_alpha)
            self.balance_loss = batch_loss if self.balance_loss is None else self.balance_loss + batch_loss
        routed = self.route(x, weights, indices)
        if self.shared_experts is not None:
            routed = routed + self.shared_experts(x)
        return routed.view(shape)
    # --8<-- [end:moe_forward]

    # --8<-- [start:route]
    def route(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """sum_k weights[t, k] * Expert_{indices[t, k]}(x[t]) for every token t, vectorised over tokens.

        The (token, choice) pairs are sorted by expert, so each expert runs once on one contiguous
        slice of its tokens; the results are scaled and added back with ``index_add_``.
        x: (tokens, dim); weights, indices: (tokens, k) -> (tokens, dim)
        """
        order, token_of_pair, counts = self.sort_pairs(indices)
        outputs = self.run_experts(x[token_of_pair], counts)
        weighted = outputs * weights.flatten()[order].unsqueeze(-1)
        return torch.zeros_like(x).index_add_(0, token_of_pair, weighted)

    def sort_pairs(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (token, choice) pairs sorted by expert, and how many pairs each expert got.

        indices: (tokens, k) -> order: (tokens * k,) pair ids sorted by expert (pair p = token p // k,
        choice p % k), token_of_pair: (tokens * k,) the token of each sorted pair,
        counts: (n_routed_experts,) pairs per expert.
        """
        expert_of_pair = indices.flatten()  # (tokens * k,)
        order = expert_of_pair.argsort(stable=True)  # stable: within an expert, pairs stay in token order
        counts = torch.bincount(expert_of_pair, minlength=self.n_routed_experts)
        if self.training:
            self.tokens_per_expert += counts  # the load the bias update reads
        return order, order // indices.size(1), counts

    def run_experts(self, x: torch.Tensor, counts: torch.Tensor, experts: list[MLP] | None = None) -> torch.Tensor:
        """Expert i of ``experts`` on the i-th slice of x, in ``experts_impl``'s way.

        x: (rows, dim), rows sorted by expert; counts: (len(experts),) rows per expert -> (rows, dim).
        ``experts`` defaults to all routed experts; the parallel layers pass the ones their rank owns.
        """
        experts = list(self.experts) if experts is None else experts
        if self.experts_impl == "grouped":
            return self.grouped_experts(x, counts, experts)
        if self.experts_impl != "loop":
            raise ValueError(f"MoE.experts_impl must be 'loop' or 'grouped', got {self.experts_impl!r}")
        chunks = x.split(counts.tolist())
        return torch.cat([expert(chunk) for expert, chunk in zip(experts, chunks)])
    # --8<-- [end:route]

    def grouped_experts(self, x: torch.Tensor, counts: torch.Tensor, experts: list[MLP] | None = None) -> torch.Tensor:
        """Every expert's SwiGLU on its slice of x in two grouped matrix multiplies (w1 and w3 fused, then w2).

        x: (rows, dim), rows sorted by expert; counts: (len(experts),) rows per expert -> (rows, dim);
        ``experts`` defaults to all routed experts. The multiplies need the weights stacked: w1 and w3
        side by side as one (experts, 2*inter, dim) tensor (the hub's ``gate_up_proj`` order), w2 as
        (experts, dim, inter). ``stacked_weights`` keeps them stacked once and for all: the experts'
        ``nn.Linear`` weights (the checkpoint's per-expert layout, what the optimizer updates) become
        views into the two stacked tensors, so no call copies them; ``GroupedLinear`` hands each expert
        its slice of the stacked gradient. Where the weights cannot be views (sharded by FSDP, on the
        meta device) they are stacked on every call, with autograd, as a plain ``torch.stack``.
        """
        experts = list(self.experts) if experts is None else experts
        n, inter = len(experts), experts[0].w1.out_features
        # grouped_mm is not autocast-aware (pytorch#174763): cast to the dtype autocast would use.
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        stacked = self.stacked_weights(experts)
        if stacked is None:
            # Stacking [w1_0, w3_0, w1_1, w3_1, ...] and viewing pairs as one matrix: [w1_e; w3_e] per expert.
            w13 = torch.stack([w.weight for e in experts for w in (e.w1, e.w3)]).view(n, 2 * inter, -1)
            w2 = torch.stack([e.w2.weight for e in experts])
            gate, up = grouped_mm(x.to(dtype), w13.to(dtype), counts).chunk(2, dim=-1)
            return grouped_mm(F.silu(gate) * up, w2.to(dtype), counts)
        w13, w2 = stacked
        ends = counts.cumsum(0).to(torch.int32)
        gate, up = GroupedLinear.apply(x.to(dtype), counts, ends, w13.to(dtype),
                                       *[w.weight for e in experts for w in (e.w1, e.w3)]).chunk(2, dim=-1)
        return GroupedLinear.apply(F.silu(gate) * up, counts, ends, w2.to(dtype), *[e.w2.weight for e in experts])

    def stacked_weights(self, experts: list[MLP]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(w13, w2): the experts' weights as two stacked tensors of which every expert's w1, w3 and w2
        ``weight`` is a view, made so on the first call (and again after ``model.to(...)`` or anything
        else that gives the weights new memory); None where the weights cannot be views."""
        weights = [w.weight for e in experts for w in (e.w1, e.w3, e.w2)]
        first = weights[0]
        # Not under torch.compile (no graph may move parameters) nor torch.distributed (FSDP owns the
        # memory of its unsharded weights): there the weights are stacked on each call.
        if torch.compiler.is_compiling() or (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return None
        if first.device.type == "meta" or any(type(w) is not nn.Parameter or w.dtype != first.dtype
                                               or w.device != first.device for w in weights):
            return None
        cache = getattr(self, "_stacked", None)
        key = tuple(id(e) for e in experts)
        if cache is not None and cache[0] == key:
            w13, w2 = cache[1], cache[2]
            inter = experts[0].w1.out_features
            if all(e.w1.weight.data_ptr() == w13[j, :inter].data_ptr()
                   and e.w3.weight.data_ptr() == w13[j, inter:].data_ptr()
                   and e.w2.weight.data_ptr() == w2[j].data_ptr() for j, e in enumerate(experts)):
                return w13, w2
        with torch.no_grad():
            n, inter = len(experts), experts[0].w1.out_features
            w13 = torch.stack([w.weight for e in experts for w in (e.w1, e.w3)]).view(n, 2 * inter, -1)
            w2 = torch.stack([e.w2.weight for e in experts])
        for j, e in enumerate(experts):  # the parameters keep their identity (optimizer state, hooks)
            e.w1.weight.data, e.w3.weight.data, e.w2.weight.data = w13[j, :inter], w13[j, inter:], w2[j]
        self._stacked = (key, w13, w2)
        return w13, w2


class GroupedLinear(torch.autograd.Function):
    """``grouped_mm(x, stacked, counts)`` whose weight gradient goes to the per-expert weights.

    apply(x, counts, ends, stacked, *weights): stacked (groups, out, in) holds weights[i] as its
    slices (``MoE.stacked_weights``; two per group when a group's rows are w1 then w3). Backward:
    dx = dy W_g per group, dW_g = dy_g^T x_g (one grouped product), split into the weights' shapes.
    """

    @staticmethod
    def forward(ctx, x, counts, ends, stacked, *weights):
        ctx.save_for_backward(x, counts, ends, stacked)
        ctx.per_group = len(weights) // counts.numel()
        return grouped_mm(x, stacked, counts)

    @staticmethod
    def backward(ctx, dy):
        x, counts, ends, stacked = ctx.saved_tensors
        dy = dy.contiguous()
        dx = grouped_mm(dy, stacked.transpose(1, 2), counts)
        if grouped_mm_supported(x, stacked) and dy.size(-1) * dy.element_size() % 16 == 0:
            dw = torch._grouped_mm(dy.t(), x, offs=ends)  # (groups, out, in): jagged along the rows
        else:
            sizes = counts.tolist()
            dw = torch.stack([a.t() @ b for a, b in zip(dy.split(sizes), x.split(sizes))])
        grads = [part for group in dw for part in group.chunk(ctx.per_group)]
        return (dx, None, None, None, *grads)


# --------------------------------------------------------------------------- grouped matrix multiply
def grouped_mm(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor, kernel: bool | None = None) -> torch.Tensor:
    """Row group g of x times weight[g]^T, for all groups in one call: a grouped ``F.linear``.

    x: (rows, in) with the rows of group 0 first, then group 1, ...; weight: (groups, out, in)
    (``nn.Linear`` layout); counts: (groups,) int, rows per group (may be 0) -> (rows, out).

    Uses ``torch._grouped_mm`` where this torch build and device run it (``kernel=None``:
    decide with ``grouped_mm_supported``), else ``padded_grouped_mm``. Both equal a loop of
    ``F.linear`` over the groups.
    """
    if kernel is None:
        kernel = grouped_mm_supported(x, weight)
    if not kernel:
        return padded_grouped_mm(x, weight, counts)
    ends = counts.cumsum(0).to(torch.int32)  # _grouped_mm wants cumulative end offsets
    return torch._grouped_mm(x, weight.transpose(-2, -1), offs=ends)


def grouped_mm_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` can run these operands here.

    It needs torch >= 2.9 on CPU (2.8 had only the Hopper kernel), a CUDA GPU of compute
    capability 8.0+ (9.0 with torch 2.8), fp32/bf16/fp16 (bf16 only under ``torch.compile``), and
    every stride a multiple of 16 bytes.
    """
    if not hasattr(torch, "_grouped_mm") or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if torch.compiler.is_compiling() and x.dtype != torch.bfloat16:
        return False
    new_torch = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 9)
    if x.device.type == "cpu" and not new_torch:
        return False
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device) < ((8, 0) if new_torch else (9, 0)):
        return False
    if x.device.type not in ("cpu", "cuda"):
        return False
    return all(size * x.element_size() % 16 == 0 for size in (x.size(-1), weight.size(-1), weight.size(-2)))


def padded_grouped_mm(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The same product as ``grouped_mm`` through one batched matmul: each group's rows are
    copied into a zero-padded (groups, max_rows, in) tensor, multiplied with ``torch.bmm``, and read back.

    x: (rows, in); weight: (groups, out, in); counts: (groups,) -> (rows, out)
    """
    groups = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)  # group of each row
    starts = counts.cumsum(0) - counts
    slots = torch.arange(x.size(0), device=x.device) - starts[groups]  # position of each row in its group
    padded = x.new_zeros(counts.numel(), int(counts.max()), x.size(-1))
    padded[groups, slots] = x
    return torch.bmm(padded, weight.transpose(1, 2))[groups, slots]


# --------------------------------------------------------------------------- sequence-wise balance loss
def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    """The complementary sequence-wise balance loss (V3 report eq. 17-20), averaged over the batch.

        f_i = N_r / (K_r T) * sum_t 1[expert i chosen for token t]     fraction of picks, 1 when uniform
        P_i = 1/T * sum_t s'_{i,t},   s'_{i,t} = s_{i,t} / sum_j s_{j,t}  mean normalised affinity
        L_Bal = alpha * sum_i f_i P_i                                    per sequence

    scores: (batch, seq, experts) unbiased affinities s (``Gate``'s third output);
    indices: (batch, seq, k) the experts actually chosen -> scalar.
    The report's indicator is the top-K of the unbiased s; we count the experts the biased,
    group-limited router really chose, whose load the loss is meant to even out.
    f carries no gradient (a count); the gradient reaches the gate through P.
    """
    # --8<-- [start:sequence_balance_loss]
    n_experts, k, seq = scores.size(-1), indices.size(-1), scores.size(-2)
    chosen = torch.zeros_like(scores).scatter_(-1, indices, 1.0)  # (batch, seq, experts) one-hot picks
    f = chosen.sum(dim=1) * n_experts / (k * seq)  # (batch, experts)
    p = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=1)  # (batch, experts)
    return alpha * (f * p).sum(dim=-1).mean()
    # --8<-- [end:sequence_balance_loss]


# --8<-- [start:expert_balance_loss]
def expert_balance_loss(scores: torch.Tensor, indices: torch.Tensor, alpha: float) -> torch.Tensor:
    """The classic expert-level auxiliary loss (DeepSeek-V2 eq. 12-14; GShard, Switch Transformer), which V3
    replaced by the bias update: the same alpha * sum_i f_i P_i, over every token of the batch at once
    instead of per sequence, and with alpha large enough to balance on its own (Switch: 0.01).

    scores: (tokens, experts) unbiased affinities; indices: (tokens, k) chosen experts -> scalar.
    """
    return sequence_balance_loss(scores.unsqueeze(0), indices.unsqueeze(0), alpha)
# --8<-- [end:expert_balance_loss]
