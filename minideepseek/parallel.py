"""Tensor and expert parallelism, written out: how one model is cut across ranks.

A model too big for one GPU is cut into pieces, one per rank, and the ranks talk
where a piece needs what another one holds. The official inference code
(deepseek-ai/DeepSeek-V3 ``inference/model.py``) cuts DeepSeek-V3 with four layers,
which this module rebuilds under the same names:

* ``ParallelEmbedding``: rank r holds vocabulary rows [r V/W, (r+1) V/W). A token
  outside them gets a zero vector; an **all-reduce** (sum) over the ranks then gives
  every rank the one real row.
* ``ColumnParallelLinear``: the *output* features (rows of the weight, dim 0) are split.
  Each rank computes its slice of y = x W^T from the whole x; nothing is sent forward.
* ``RowParallelLinear``: the *input* features (columns of the weight, dim 1) are split.
  Each rank multiplies its slice of x by its slice of W, giving a partial sum of y;
  an **all-reduce** adds the partial sums.
* experts split by rank: rank r owns routed experts [r E/W, (r+1) E/W).

A column-parallel layer followed by a row-parallel one needs a single all-reduce for
the pair (Megatron-LM's pattern): MLA's ``wq_b``/``wkv_b`` are column-parallel (each
rank gets n_heads/W whole heads, so attention runs locally) and ``wo`` is row-parallel;
an MLP's ``w1``/``w3`` are column-parallel and ``w2`` row-parallel. The small
down-projections ``wq_a`` and ``wkv_a``, the norms and the router stay replicated.

Training needs the *gradients* of these collectives too (Megatron's ``f`` and ``g``):

    copy_to_parallel      forward: identity         backward: all-reduce (sum)
    reduce_from_parallel  forward: all-reduce (sum) backward: identity

A column-parallel layer reads a replicated x, and each rank's gradient for x covers
only its own columns, so the backward sums them; a row-parallel layer's output is
summed forward, and its gradient, identical on every rank, passes back untouched.

Two MoE layouts live here:

* ``ParallelMoE`` is the official inference layout: every rank sees every token, runs
  its own experts on the tokens routed to them, and an all-reduce adds the results.
* ``ExpertParallelMoE`` is the training layout (V3 report section 3.2.2): each rank
  holds *different* tokens (data parallel) and E/W experts; every (token, expert)
  pair travels to the rank that owns the expert and back by **all-to-all**.

``tensor_parallel(model)`` and ``expert_parallel(model)`` swap these layers into an
existing ``Transformer``, which then runs unchanged; with one rank (or without
``torch.distributed``) they reproduce today's model exactly. ``shard_state_dict`` is
the official ``convert.py`` splitting rule applied to a live model, and
``load_official_shards`` reads one rank's ``model{rank}-mp{world}.safetensors`` (written by
``convert.py``, ``checkpoint.save_pretrained(format="official", world_size=W)`` or
``minideepseek convert``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from .attention import MLA
from .checkpoint_names import FP32, SCALE, official_layout, official_scale_name, routed_expert
from .checkpoint_names import OFFICIAL_SPLIT_DIM
from .config import ModelConfig
from .fp8 import dequantize_blockwise
from .model import Transformer
from .moe import MLP, MoE

Group = dist.ProcessGroup | None  # None: the default (world) group


def group_size(group: Group = None) -> int:
    """Ranks in ``group``; 1 when torch.distributed is not initialised (a single process)."""
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def group_rank(group: Group = None) -> int:
    """This process's rank in ``group``; 0 when torch.distributed is not initialised."""
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


# --------------------------------------------------------------------------- collectives with gradients
# --8<-- [start:collectives]
class _CopyToParallel(torch.autograd.Function):
    """Forward: identity. Backward: sum the gradient over the group (Megatron's ``f``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Group) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromParallel(torch.autograd.Function):
    """Forward: sum over the group. Backward: identity (Megatron's ``g``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Group) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _GatherFromParallel(torch.autograd.Function):
    """Forward: concatenate every rank's slice along the last dim. Backward: keep this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Group) -> torch.Tensor:
        ctx.group = group
        slices = [torch.empty_like(x) for _ in range(group_size(group))]
        dist.all_gather(slices, x.contiguous(), group=group)
        return torch.cat(slices, dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.chunk(group_size(ctx.group), dim=-1)[group_rank(ctx.group)].contiguous(), None
# --8<-- [end:collectives]


def copy_to_parallel(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """x, replicated, entering column-parallel work: identity forward, all-reduced gradient."""
    return x if group_size(group) == 1 else _CopyToParallel.apply(x, group)


def reduce_from_parallel(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """Partial sums leaving row-parallel work: all-reduced forward, gradient passed through."""
    return x if group_size(group) == 1 else _ReduceFromParallel.apply(x, group)


def gather_from_parallel(x: torch.Tensor, group: Group = None) -> torch.Tensor:
    """Slices of the last dim from every rank, concatenated: (..., n/W) -> (..., n)."""
    return x if group_size(group) == 1 else _GatherFromParallel.apply(x, group)


def _exchange(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group: Group) -> torch.Tensor:
    out = x.new_empty((sum(output_splits), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), output_splits, input_splits, group=group)
    return out


# --8<-- [start:all_to_all]
class _AllToAll(torch.autograd.Function):
    """Forward: rows to the ranks that need them. Backward: the gradients travel the reverse way.

    PyTorch ships the same as ``torch.distributed._functional_collectives.all_to_all_single_autograd``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, output_splits: list[int], input_splits: list[int], group: Group) -> torch.Tensor:
        ctx.output_splits, ctx.input_splits, ctx.group = output_splits, input_splits, group
        return _exchange(x, output_splits, input_splits, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return _exchange(grad, ctx.input_splits, ctx.output_splits, ctx.group), None, None, None


def all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group: Group = None) -> torch.Tensor:
    """Rows x[sum(input_splits[:r]) : sum(input_splits[:r+1])] go to rank r; the result stacks, in rank
    order, the rows every rank sent here. x: (sum(input_splits), ...) -> (sum(output_splits), ...)."""
    return x if group_size(group) == 1 else _AllToAll.apply(x, output_splits, input_splits, group)
# --8<-- [end:all_to_all]


def _split(size: int, world: int, what: str) -> int:
    if size % world:
        raise ValueError(f"{what} ({size}) is not divisible by the {world} ranks it is split across")
    return size // world


# --------------------------------------------------------------------------- the official layers
# --8<-- [start:layers]
class ParallelEmbedding(nn.Embedding):
    """Token embedding split by vocabulary rows (official ``ParallelEmbedding``).

    weight: (vocab_size / W, dim), rows [rank V/W, (rank+1) V/W) of the full table.
    forward(tokens: (batch, seq) int64) -> (batch, seq, dim), replicated on every rank.
    """

    def __init__(self, vocab_size: int, dim: int, group: Group = None, **kwargs):
        self.group = group
        part = _split(vocab_size, group_size(group), "vocab_size")
        super().__init__(part, dim, **kwargs)
        self.vocab_start = group_rank(group) * part

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.vocab_start
        outside = (local < 0) | (local >= self.num_embeddings)
        rows = F.embedding(local.masked_fill(outside, 0), self.weight)
        # Zero the rows this rank does not own; the sum over ranks then holds the one real row.
        return reduce_from_parallel(rows.masked_fill(outside.unsqueeze(-1), 0.0), self.group)


class ColumnParallelLinear(nn.Linear):
    """y = x W^T with W's output features split (official ``ColumnParallelLinear``; shard dim 0).

    weight: (out_features / W, in_features).
    forward(x: (..., in_features) replicated) -> (..., out_features / W), this rank's slice.
    """

    def __init__(self, in_features: int, out_features: int, group: Group = None, **kwargs):
        self.group = group
        super().__init__(in_features, _split(out_features, group_size(group), "out_features"), bias=False, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(copy_to_parallel(x, self.group), self.weight)


class RowParallelLinear(nn.Linear):
    """y = x W^T with W's input features split (official ``RowParallelLinear``; shard dim 1).

    weight: (out_features, in_features / W).
    forward(x: (..., in_features / W) this rank's slice) -> (..., out_features), replicated.
    """

    def __init__(self, in_features: int, out_features: int, group: Group = None, **kwargs):
        self.group = group
        super().__init__(_split(in_features, group_size(group), "in_features"), out_features, bias=False, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_from_parallel(F.linear(x, self.weight), self.group)


class ParallelHead(ColumnParallelLinear):
    """The output head: column-parallel over the vocabulary, logits all-gathered.

    The official ``Transformer.forward`` all-gathers the head's logits itself; doing it
    here lets our ``Transformer`` run unchanged. forward(x: (..., dim)) -> (..., vocab_size).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gather_from_parallel(super().forward(x), self.group)
# --8<-- [end:layers]


def parallel_mlp(dim: int, inter_dim: int, group: Group = None) -> MLP:
    """A SwiGLU MLP with w1, w3 column-parallel and w2 row-parallel: one all-reduce per call."""
    mlp = MLP(dim, inter_dim)
    mlp.w1 = ColumnParallelLinear(dim, inter_dim, group)
    mlp.w2 = RowParallelLinear(inter_dim, dim, group)
    mlp.w3 = ColumnParallelLinear(dim, inter_dim, group)
    return mlp


class ParallelMLA(MLA):
    """MLA with its heads split across ranks (the official ``MLA`` with world_size > 1).

    ``wq``/``wq_b`` and ``wkv_b`` are column-parallel, so rank r computes heads
    [r H/W, (r+1) H/W) and runs attention on them alone; ``wo`` is row-parallel and
    sums the heads' contributions. ``wq_a``, ``wkv_a`` and the two norms are replicated.
    forward(x: (batch, seq, dim), freqs_cis) -> (batch, seq, dim), replicated.
    """

    def __init__(self, config: ModelConfig, group: Group = None):
        super().__init__(config)
        self.group = group
        self.n_heads = _split(config.n_heads, group_size(group), "n_heads")
        n_heads = config.n_heads
        if self.q_lora_rank == 0:
            self.wq = ColumnParallelLinear(config.dim, n_heads * self.qk_head_dim, group)
        else:
            self.wq_b = ColumnParallelLinear(self.q_lora_rank, n_heads * self.qk_head_dim, group)
        self.wkv_b = ColumnParallelLinear(self.kv_lora_rank, n_heads * (self.qk_nope_head_dim + self.v_head_dim), group)
        self.wo = RowParallelLinear(n_heads * self.v_head_dim, config.dim, group)

    # --8<-- [start:parallel_mla]
    def compress_kv(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent, k_pe = super().compress_kv(x, freqs_cis)
        # k_pe is shared by all heads, and this rank's heads give only part of its gradient:
        # like the inputs of the column-parallel layers, it needs the gradient summed over ranks.
        return latent, copy_to_parallel(k_pe, self.group)
    # --8<-- [end:parallel_mla]


# --------------------------------------------------------------------------- experts split by rank
class LocalExpertsMoE(MoE):
    """An MoE whose rank keeps only routed experts [rank E/W, (rank+1) E/W).

    ``experts`` stays indexed by the global expert id, with ``None`` for the other ranks'
    experts (as in the official code), so a state dict names experts as a single-process
    model does. The router and its bias are replicated; ``tokens_per_expert`` counts all
    E experts for the tokens this rank routed. Sorting the pairs and running the experts are
    ``MoE.sort_pairs`` and ``MoE.run_experts``, given ``local_experts``: the subclasses only add
    the communication. (The layer is built whole, then trimmed: free on the meta device, where
    ``load_official_shards`` builds it; elsewhere one layer's experts exist briefly.)
    """

    def __init__(self, config: ModelConfig, group: Group = None):
        super().__init__(config)
        self.group = group
        self.n_local_experts = _split(config.n_routed_experts, group_size(group), "n_routed_experts")
        self.first_expert = group_rank(group) * self.n_local_experts
        mine = range(self.first_expert, self.first_expert + self.n_local_experts)
        self.experts = nn.ModuleList(expert if i in mine else None for i, expert in enumerate(self.experts))

    @property
    def local_experts(self) -> list[MLP]:
        """This rank's n_local_experts experts, in expert order (what ``run_experts`` runs here)."""
        return list(self.experts[self.first_expert:self.first_expert + self.n_local_experts])


class ParallelMoE(LocalExpertsMoE):
    """The official inference layout (official ``MoE`` with world_size > 1).

    Every rank holds the same tokens. It runs its own experts on the tokens routed to
    them, and an all-reduce adds the ranks' partial outputs; the shared experts are a
    tensor-parallel MLP. forward(x: (batch, seq, dim)) -> (batch, seq, dim), replicated.
    """

    def __init__(self, config: ModelConfig, group: Group = None):
        super().__init__(config, group)
        self.shared_experts = parallel_mlp(config.dim, config.n_shared_experts * config.moe_inter_dim, group)

    # --8<-- [start:parallel_moe]
    def route(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # The router ran identically on every rank; each rank's experts see only part of
        # the routing weights and x, so their gradients are summed over ranks (copy_to_parallel).
        x, weights = copy_to_parallel(x, self.group), copy_to_parallel(weights, self.group)
        order, token_of_pair, counts = self.sort_pairs(indices)
        # Sorted by expert, this rank's pairs are one contiguous run.
        start = int(counts[:self.first_expert].sum())
        local_counts = counts[self.first_expert:self.first_expert + self.n_local_experts]
        mine = slice(start, start + int(local_counts.sum()))
        outputs = self.run_experts(x[token_of_pair[mine]], local_counts, self.local_experts)
        weighted = outputs * weights.flatten()[order[mine]].unsqueeze(-1)
        partial = torch.zeros_like(x).index_add_(0, token_of_pair[mine], weighted)
        return reduce_from_parallel(partial, self.group)
    # --8<-- [end:parallel_moe]


class ExpertParallelMoE(LocalExpertsMoE):
    """Expert parallelism for training: different tokens on every rank, tokens travel by all-to-all.

    Rank r owns experts [r E/W, (r+1) E/W). A forward pass (V3 report section 3.2.2,
    "dispatch" and "combine"):

    1. sort this rank's (token, expert) pairs by expert and count them per expert;
    2. exchange the counts, so every rank knows how many rows it will receive;
    3. **dispatch**: all-to-all the rows to the experts' owners;
    4. each rank runs its experts on what it received (rows regrouped by expert);
    5. **combine**: all-to-all the results back, weight them and add them per token.

    ``all_to_all`` carries the gradients back the same way. Non-expert
    parameters are replicated (data parallel); an expert's gradient sums the
    contributions of *all* ranks' tokens. forward(x: (batch, seq, dim)) -> (batch, seq, dim).
    """

    # --8<-- [start:expert_parallel]
    def route(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        world = group_size(self.group)
        order, token_of_pair, counts = self.sort_pairs(indices)
        # 2. counts_in[s, e]: rows that rank s sends to my local expert e.
        counts_in = all_to_all(counts, [self.n_local_experts] * world, [self.n_local_experts] * world, self.group)
        counts_in = counts_in.view(world, self.n_local_experts)  # (source rank, local expert)
        send = counts.view(world, self.n_local_experts).sum(1).tolist()
        receive = counts_in.sum(1).tolist()
        # 3. dispatch: rows sorted by expert are already grouped by destination rank.
        received = all_to_all(x[token_of_pair], receive, send, self.group)
        # 4. arrivals are ordered (source rank, expert); regroup them by expert for the experts.
        expert_of_row = torch.arange(self.n_local_experts, device=x.device).repeat(world)
        by_expert = expert_of_row.repeat_interleave(counts_in.flatten()).argsort(stable=True)
        outputs = self.run_experts(received[by_expert], counts_in.sum(0), self.local_experts)
        outputs = outputs[by_expert.argsort()]  # back to arrival order
        # 5. combine: the reverse all-to-all returns every row to the rank that sent it.
        returned = all_to_all(outputs, send, receive, self.group)
        weighted = returned * weights.flatten()[order].unsqueeze(-1)
        return torch.zeros_like(x).index_add_(0, token_of_pair, weighted)
    # --8<-- [end:expert_parallel]


# --------------------------------------------------------------------------- the convert.py splitting rule
# --8<-- [start:shard_state_dict]
def shard_state_dict(state_dict: dict[str, torch.Tensor], n_routed_experts: int, rank: int, world_size: int,
                     split_dense: bool = True) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s part of a full state dict in our (official) names, by ``inference/convert.py``'s rule.

    Routed experts are not sliced: the rank keeps experts [rank E/W, (rank+1) E/W) whole.
    With ``split_dense`` (tensor parallelism) every tensor whose module is named in
    ``OFFICIAL_SPLIT_DIM`` (embed, head, wq, wq_b, wkv_b, wo, w1, w2, w3) is cut into W equal
    slices along that dimension; without it (expert parallelism alone) they are kept whole.
    Norms, ``wq_a``, ``wkv_a``, the router and ``eh_proj`` are always replicated.
    """
    per_rank = _split(n_routed_experts, world_size, "n_routed_experts")
    shard = {}
    for key, tensor in state_dict.items():
        expert = routed_expert(key)
        if expert is not None:
            if rank * per_rank <= expert < (rank + 1) * per_rank:
                shard[key] = tensor
            continue
        dim = OFFICIAL_SPLIT_DIM.get(key.split(".")[-2])
        if split_dense and dim is not None:
            part = _split(tensor.size(dim), world_size, f"{key} dimension {dim}")
            tensor = tensor.narrow(dim, rank * part, part).contiguous()
        shard[key] = tensor
    return shard
# --8<-- [end:shard_state_dict]


# --------------------------------------------------------------------------- swapping the layers in
def _replace_modules(model: Transformer, build) -> None:
    """Replace submodules of ``model`` by ``build(name, module)`` (None: keep it).

    The new modules are built on the model's device (the meta device for a model that is only
    a skeleton, see ``load_official_shards``); ``_load_slices`` then fills them.
    """
    replacements = []
    with torch.device(model.embed.weight.device):
        for name, module in model.named_modules():
            new = build(name, module)
            if new is not None:
                replacements.append((name, new))
    for name, new in replacements:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)


def _same_settings(new: nn.Module, old: nn.Module, *names: str) -> nn.Module:
    """Carry the old module's run-time switches (attention backend, experts implementation) over."""
    for name in names:
        setattr(new, name, getattr(old, name))
    return new


def _load_slices(model: Transformer, full: dict[str, torch.Tensor], split_dense: bool, group: Group) -> None:
    """Give the model this rank's slices of ``full``, each tensor keeping its dtype and device."""
    config = model.config
    shard = shard_state_dict(full, config.n_routed_experts, group_rank(group), group_size(group), split_dense)
    model.load_state_dict(shard, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.head.weight = model.embed.weight


def tensor_parallel(model: Transformer, group: Group = None) -> Transformer:
    """Cut ``model`` as the official inference code does, in place; returns it.

    Embedding and head split by vocabulary; ``wq``/``wq_b``/``wkv_b`` column-parallel (n_heads/W
    heads per rank) and ``wo`` row-parallel; dense MLPs and shared experts column/row-parallel;
    routed experts split by rank (``ParallelMoE``). Every rank must start from the same weights
    (same seed, or the same checkpoint). Call it before building the optimizer.
    """
    config = model.config
    full = model.state_dict()

    def build(name: str, module: nn.Module) -> nn.Module | None:
        if name == "embed":
            return ParallelEmbedding(config.vocab_size, config.dim, group)
        if name == "head":
            return ParallelHead(config.dim, config.vocab_size, group)
        if isinstance(module, MLA):
            return _same_settings(ParallelMLA(config, group), module, "backend")
        if isinstance(module, MoE):
            return _same_settings(ParallelMoE(config, group), module, "experts_impl")
        if isinstance(module, MLP) and name.endswith(".ffn"):  # a dense layer's MLP
            return parallel_mlp(config.dim, config.inter_dim, group)
        return None

    _replace_modules(model, build)
    _load_slices(model, full, split_dense=True, group=group)
    return model


def expert_parallel(model: Transformer, group: Group = None) -> Transformer:
    """Give every MoE layer of ``model`` expert parallelism (``ExpertParallelMoE``), in place; returns it.

    Everything else stays replicated, for data parallelism (DDP or FSDP2) over the same ranks.
    Every rank must start from the same weights. Call it before building the optimizer.
    """
    full = model.state_dict()
    config = model.config

    def build(name: str, module: nn.Module) -> nn.Module | None:
        if isinstance(module, MoE):
            return _same_settings(ExpertParallelMoE(config, group), module, "experts_impl")
        return None

    _replace_modules(model, build)
    _load_slices(model, full, split_dense=False, group=group)
    return model


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the routed experts a rank owns under ``expert_parallel`` (not replicated)."""
    return [p for m in model.modules() if isinstance(m, ExpertParallelMoE) for e in m.local_experts
            for p in e.parameters()]


# --------------------------------------------------------------------------- official-layout inference
def load_official_shards(directory: str | Path, config: ModelConfig | None = None, group: Group = None,
                         device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Transformer:
    """This rank's part of the official model, read from ``model{rank}-mp{world}.safetensors`` only.

    Run on ``world`` ranks (e.g. ``torchrun --nproc_per_node world``). Each rank builds the model on
    the meta device, cuts it with ``tensor_parallel`` and fills it from its own file; FP8 weights are
    dequantised with their ``.scale`` (128x128 blocks). ``config`` defaults to the directory's
    ``config.json``. ``convert.py`` drops the MTP layer, so the model has no MTP modules.
    Returns a model in eval mode whose ``forward`` gives the full logits on every rank.
    """
    rank, world = group_rank(group), group_size(group)
    directory = Path(directory)
    config = dataclasses.replace(config or ModelConfig.from_json(directory / "config.json"), n_mtp_layers=0)
    path = directory / f"model{rank}-mp{world}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: rank {rank} of {world} reads the official file written for "
                                f"{world} ranks (minideepseek convert --model-parallel {world})")
    with safe_open(path, framework="pt") as f:
        names = set(f.keys())
        fp8 = any(name.endswith(".scale") for name in names)
        expected = official_layout(config, world, fp8)[rank]
        missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or unexpected:
            raise ValueError(f"{path} does not hold rank {rank}'s tensors for this config at world size {world}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.device("meta"):
            model = Transformer(config)
        tensor_parallel(model, group)  # still on the meta device: only the shapes of this rank's slices
        state = {}
        for name, spec in expected.items():
            if spec.role == SCALE:
                continue
            tensor = f.get_tensor(name)
            if tuple(tensor.shape) != spec.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {spec.shape}")
            scale = f.get_tensor(official_scale_name(name)) if official_scale_name(name) in names else None
            target = torch.float32 if spec.role == FP32 else dtype
            tensor = tensor.to(device)
            state[name] = (dequantize_blockwise(tensor, scale.to(device), dtype=target) if scale is not None
                           else tensor.to(target))
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        if isinstance(module, MoE):
            module.tokens_per_expert = torch.zeros_like(module.tokens_per_expert, device=device)
    return model.eval()
