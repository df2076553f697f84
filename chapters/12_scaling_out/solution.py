"""Chapter 12 reference solutions (see exercise.py for the task of each function)."""

import torch
import torch.nn.functional as F

Op = tuple[str, int]


def tensor_parallel_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor,
                        world_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    partials = []
    for w1_r, w3_r, w2_r in zip(w1.chunk(world_size, 0), w3.chunk(world_size, 0), w2.chunk(world_size, 1)):
        hidden = F.silu(x @ w1_r.T) * (x @ w3_r.T)  # this rank's slice of the hidden units: no communication
        partials.append(hidden @ w2_r.T)  # a partial sum over the hidden units
    return torch.stack(partials).sum(0), partials


def vocab_parallel_embedding(tokens: torch.Tensor, weight: torch.Tensor,
                             world_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    part = weight.size(0) // world_size
    partials = []
    for rank in range(world_size):
        local = tokens - rank * part
        outside = (local < 0) | (local >= part)
        rows = F.embedding(local.masked_fill(outside, 0), weight[rank * part:(rank + 1) * part])
        partials.append(rows.masked_fill(outside.unsqueeze(-1), 0.0))
    return torch.stack(partials).sum(0), partials


def all_to_all_splits(indices_per_rank: list[torch.Tensor], n_experts: int, world_size: int) -> torch.Tensor:
    per_rank = n_experts // world_size
    return torch.stack([torch.bincount(indices.flatten() // per_rank, minlength=world_size)
                        for indices in indices_per_rank])


def one_f_one_b(n_stages: int, n_micro_batches: int) -> list[list[Op]]:
    schedule = []
    for stage in range(n_stages):
        warmup = min(n_stages - 1 - stage, n_micro_batches)
        ops = [("F", m) for m in range(warmup)]
        forwards = warmup
        for backward in range(n_micro_batches):
            if forwards < n_micro_batches:
                ops.append(("F", forwards))
                forwards += 1
            ops.append(("B", backward))
        schedule.append(ops)
    return schedule


def pipeline_makespan(schedule: list[list[Op]], forward: float, backward: float) -> float:
    last = len(schedule) - 1
    done: dict[tuple[str, int, int], float] = {}
    clock, position = [0.0] * len(schedule), [0] * len(schedule)
    progress = True
    while progress:
        progress = False
        for stage, ops in enumerate(schedule):
            while position[stage] < len(ops):
                kind, m = ops[position[stage]]
                if kind == "F":
                    need = ("F", m, stage - 1) if stage > 0 else None
                else:
                    need = ("B", m, stage + 1) if stage < last else ("F", m, stage)
                if need is not None and need not in done:
                    break
                start = max(clock[stage], done[need] if need else 0.0)
                clock[stage] = start + (forward if kind == "F" else backward)
                done[(kind, m, stage)] = clock[stage]
                position[stage] += 1
                progress = True
    return max(clock)


def node_limited_route(scores: torch.Tensor, bias: torch.Tensor, node_of_expert: torch.Tensor, max_nodes: int,
                       topk: int, route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    biased = scores + bias
    n_nodes = int(node_of_expert.max()) + 1
    order = torch.argsort(node_of_expert, stable=True)  # the experts of node 0, then of node 1, ...
    per_node = biased[:, order].unflatten(-1, (n_nodes, -1))  # (tokens, nodes, experts per node)
    node_scores = per_node.topk(topk // max_nodes, dim=-1).values.sum(dim=-1)
    kept = node_scores.topk(max_nodes, dim=-1).indices  # (tokens, M)
    allowed = (node_of_expert[None, :, None] == kept[:, None, :]).any(dim=-1)  # (tokens, experts)
    indices = biased.masked_fill(~allowed, float("-inf")).topk(topk, dim=-1).indices
    weights = scores.gather(1, indices)
    return weights / weights.sum(dim=-1, keepdim=True) * route_scale, indices


def inter_node_sends(indices: torch.Tensor, node_of_expert: torch.Tensor, token_node: torch.Tensor,
                     n_nodes: int) -> torch.Tensor:
    reached = torch.zeros(indices.size(0), n_nodes, dtype=torch.bool)
    reached.scatter_(1, node_of_expert[indices], True)  # (tokens, nodes): the nodes each token must reach
    reached[torch.arange(indices.size(0)), token_node] = False  # its own node: NVLink only
    sends = torch.zeros(n_nodes, n_nodes, dtype=torch.long)
    sends.index_add_(0, token_node, reached.long())
    return sends
