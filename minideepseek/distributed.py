"""Training on several processes with PyTorch's own engine: torchrun, DDP or FSDP2, expert parallelism.

``torchrun --nproc_per_node=N -m minideepseek train ...`` starts N copies of the trainer,
one per rank, with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` in
their environment. What each copy does differently from a single process:

1. ``init_from_env``: join the process group (NCCL on GPUs, gloo on the CPU);
2. ``shard_batch``: every rank draws the same global batch and keeps its own rows, so N
   ranks see exactly the batches one process would;
3. ``parallelize_for_training``: wrap the model in **DDP** (each rank keeps all weights and
   gradients are averaged in buckets while the backward pass runs) or **FSDP2**
   (``fully_shard``: each rank keeps 1/N of every weight, gradient and optimizer moment,
   and gathers a layer's weights just before using it), optionally with **expert
   parallelism** (``parallel.expert_parallel``: each rank owns E/N routed experts, tokens
   travel by all-to-all). The wrapper's ``forward(batch)`` is ``losses.compute_loss``;
4. ``all_reduce_expert_counts`` before ``balancing.update_expert_biases``: the
   aux-loss-free bias rule needs the load of the *global* batch, and every rank must
   apply the same change so the replicated biases stay identical;
5. ``clip_grad_norm_``: the norm of the whole gradient, expert shards included;
6. ``full_state_dict`` / ``full_optimizer_state`` / ``load_full_state``: checkpoints hold
   the single-process state (experts and FSDP shards gathered), so a run saved on N ranks
   resumes on any number of ranks, one included.

Two facts about the engines matter here. DDP broadcasts buffers from rank 0 before every
forward by default, which would overwrite each rank's ``tokens_per_expert`` counts, so
those are kept out of DDP's reach. And the router biases and expert weights must stay out of
the data-parallel synchronisation: the biases are not trained by gradient, and each
rank's experts are different weights. An expert's gradient arrives summed over every
rank's tokens (the all-to-all carries it back), where DDP *averages* the replicated
gradients over ranks; ``average_expert_gradients`` divides it by N to match.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .losses import LossOutput, compute_loss
from .model import Transformer
from .moe import MoE
from .parallel import ExpertParallelMoE, Group, ParallelMoE, expert_parameters, group_rank, group_size, \
    shard_state_dict
from .parallel import expert_parallel as split_experts


@dataclass(frozen=True)
class Context:
    """Where this process stands in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the logs, plots and checkpoints."""
        return self.rank == 0


def init_from_env(device: torch.device, timeout_s: float = 600) -> Context | None:
    """Join the torchrun job described by the environment; None in a plain single process.

    ``device``: the device the trainer resolved; on CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shard_batch(batch: torch.Tensor, group: Group = None) -> torch.Tensor:
    """This rank's rows of the global batch. batch: (global_batch, ...) -> (global_batch / N, ...)."""
    world, rank = group_size(group), group_rank(group)
    if batch.size(0) % world:
        raise ValueError(f"the global batch of {batch.size(0)} sequences (TrainConfig.batch_size) does not split "
                         f"evenly over {world} ranks; use a multiple of {world}")
    part = batch.size(0) // world
    return batch[rank * part:(rank + 1) * part]


class LossModule(nn.Module):
    """The model with ``forward(batch) = compute_loss(model, batch)``.

    DDP and FSDP2 act through a module's ``forward``; ``compute_loss`` uses several entry points
    of the model (``forward_hidden``, ``head``, the MTP modules), so they are wrapped in one forward.
    """

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> LossOutput:
        return compute_loss(self.model, batch)


def _kept_local(model: Transformer) -> set[nn.Parameter]:
    """Parameters the data-parallel engine must leave alone: routed experts under expert
    parallelism (different on every rank) and the router biases (moved by the balancing rule)."""
    biases = {m.gate.bias for m in model.modules() if isinstance(m, MoE) and m.gate.bias is not None}
    return set(expert_parameters(model)) | biases


# --8<-- [start:parallelize]
def parallelize_for_training(model: Transformer, data_parallel: str = "ddp", expert_parallel: bool = False,
                             group: Group = None) -> nn.Module:
    """Wrap ``model`` for data-parallel training; returns a module whose ``forward(batch)`` gives the ``LossOutput``.

    Every rank must pass the same initial weights (same seed). ``data_parallel``: "ddp" or "fsdp"
    (FSDP2: each block, the embedding, the final norm, the head and each MTP module is sharded on
    its own, so they may also be called directly, e.g. for evaluation, on every rank at once).
    Build the optimizer afterwards, from ``model.parameters()``.
    """
    if data_parallel not in ("ddp", "fsdp"):
        raise ValueError(f"data_parallel must be 'ddp' or 'fsdp', got {data_parallel!r}")
    if expert_parallel:
        split_experts(model, group)
        average_expert_gradients(model, group)
    wrapper = LossModule(model)
    local = _kept_local(model)
    if data_parallel == "ddp":
        # Also the token counters: DDP would otherwise overwrite them with rank 0's before each forward.
        ignored = [name for name, p in model.named_parameters() if p in local]
        ignored += [name for name, _ in model.named_buffers() if name.endswith("tokens_per_expert")]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapper, [f"model.{n}" for n in ignored])
        return DistributedDataParallel(wrapper, process_group=group)
    if model.config.tie_word_embeddings:
        raise ValueError("FSDP2 here shards the embedding and the head separately; tied embeddings are not supported")
    # Imported here: FSDP2 and DTensor take about a second to import, which no single-process run needs.
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    # One unit per module that compute_loss calls directly (an MTP module's norm is called outside it);
    # the model is the root, entered through forward (evaluation) or forward_hidden (compute_loss).
    for unit in [model.embed, *model.layers, model.norm, model.head, *(m.norm for m in model.mtp), *model.mtp]:
        fully_shard(unit, ignored_params=local)
    fully_shard(model, ignored_params=local)
    register_fsdp_forward_method(model, "forward_hidden")
    return wrapper
# --8<-- [end:parallelize]


def average_expert_gradients(model: nn.Module, group: Group = None) -> None:
    """Divide each local expert's gradient by N as it is produced, as DDP/FSDP average the replicated ones."""
    world = group_size(group)
    for p in expert_parameters(model):
        p.register_hook(lambda grad: grad / world)


def all_reduce_expert_counts(model: nn.Module, group: Group = None) -> None:
    """Sum every MoE layer's ``tokens_per_expert`` over the ranks, so the bias update sees the global batch.

    Call it right before ``balancing.update_expert_biases``. The tensor-parallel ``ParallelMoE``
    already counts every token on every rank and is left alone.
    """
    if group_size(group) == 1:
        return
    for module in model.modules():
        if isinstance(module, MoE) and not isinstance(module, ParallelMoE):
            dist.all_reduce(module.tokens_per_expert, group=group)


def average(values: torch.Tensor, group: Group = None) -> torch.Tensor:
    """The mean over ranks of a tensor (e.g. the losses to log); every rank gets it."""
    if group_size(group) == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, group=group)
    return values / group_size(group)


def _is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is an FSDP2 shard (a DTensor). Asked without importing DTensor (about a second):
    if nothing has imported it, no tensor can be one."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def _norm(grads: list[torch.Tensor]) -> torch.Tensor:
    if not grads:
        return torch.zeros(())
    return _full(torch.nn.utils.get_total_norm(grads))


def clip_grad_norm_(model: nn.Module, max_norm: float, group: Group = None) -> torch.Tensor:
    """Clip the gradient of the whole model to ``max_norm`` (L2) and return its norm before clipping.

    Replicated (DDP) and sharded (FSDP2) gradients are the same on every rank or assembled by
    DTensor; the local experts' gradients differ per rank, so their squared norms are summed over ranks.
    """
    local = set(expert_parameters(model))
    params = [p for p in model.parameters() if p.grad is not None]
    total = _norm([p.grad for p in params if p not in local])
    if local:
        experts_squared = _norm([p.grad for p in params if p in local]).to(total.device) ** 2
        if group_size(group) > 1:
            dist.all_reduce(experts_squared, group=group)
        total = (total ** 2 + experts_squared).sqrt()
    if math.isfinite(max_norm):  # max_norm=inf: only measure the norm
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


# --------------------------------------------------------------------------- checkpoints across world sizes
def _gather_experts(local: dict[str, torch.Tensor], model: nn.Module, group: Group) -> dict[str, torch.Tensor]:
    """Entries named ``<moe>.experts.<i>.<rest>`` for this rank's experts -> the same for every rank's.

    Every rank holds the same number of experts with the same entries, so rank s's local expert j
    is global expert s * n_local + j.
    """
    out = {}
    world = group_size(group)
    for prefix, moe in model.named_modules():
        if not isinstance(moe, ExpertParallelMoE):
            continue
        for j in range(moe.n_local_experts):
            mine = f"{prefix}.experts.{moe.first_expert + j}."
            for key in sorted(k for k in local if k.startswith(mine)):
                tensor = local[key].contiguous()
                gathered = [torch.empty_like(tensor) for _ in range(world)]
                dist.all_gather(gathered, tensor, group=group)
                for rank, value in enumerate(gathered):
                    out[f"{prefix}.experts.{rank * moe.n_local_experts + j}.{key[len(mine):]}"] = value
    return out


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def full_state_dict(model: nn.Module, group: Group = None) -> dict[str, torch.Tensor]:
    """The state dict a single-process model would have, on every rank (collective: call it on all ranks).

    FSDP2 shards are assembled and every rank's experts gathered; keys are the model's own names.
    """
    state = {key: _full(value).detach() for key, value in model.state_dict().items()}
    return {**state, **_gather_experts(state, model, group)}


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, group: Group = None) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as ``"<parameter name>.<slot>"`` (e.g. ``layers.0.attn.wo.weight.exp_avg``),
    assembled to what a single process would hold (collective)."""
    names = {p: name for name, p in model.named_parameters()}
    state = {f"{names[p]}.{slot}": _full(value).detach() for p, slots in optimizer.state.items()
             for slot, value in slots.items()}
    return {**state, **_gather_experts(state, model, group)}


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, weights: dict[str, torch.Tensor],
                    moments: dict[str, torch.Tensor] | None = None, group: Group = None) -> None:
    """Load single-process weights (and optimizer moments) into a model parallelised on any number of ranks.

    Each rank keeps its experts (``parallel.shard_state_dict``) and, for an FSDP2 model, its shard
    of every tensor. ``moments`` uses the names of ``full_optimizer_state``.
    """
    n_experts = model.config.n_routed_experts if hasattr(model, "config") else 0
    if any(isinstance(m, ExpertParallelMoE) for m in model.modules()):
        weights = shard_state_dict(weights, n_experts, group_rank(group), group_size(group), split_dense=False)
    current = model.state_dict()
    missing, unexpected = sorted(set(current) - set(weights)), sorted(set(weights) - set(current))
    if missing or unexpected:
        raise ValueError(f"the saved weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, target in current.items():
            target.copy_(_like(weights[key], target))
    if optimizer is None or moments is None:
        return
    by_parameter: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        name, slot = key.rsplit(".", 1)
        by_parameter.setdefault(name, {})[slot] = value
    for name, p in model.named_parameters():
        if name in by_parameter:  # under expert parallelism, the other ranks' experts are skipped
            # A copy even of "step": the optimizer increments it in place.
            optimizer.state[p] = {slot: value.clone() if slot == "step" else _like(value, p)
                                  for slot, value in by_parameter[name].items()}


def _like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A copy of ``full`` placed like ``target``: its device and dtype, and sharded the same way for a DTensor."""
    if _is_dtensor(target):
        from torch.distributed.tensor import distribute_tensor  # already imported: target is a DTensor

        return distribute_tensor(full.to(target.device, target.dtype, copy=True), target.device_mesh, target.placements)
    return full.to(target.device, target.dtype, copy=True)
