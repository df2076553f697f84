"""Chapter 12 exercise: the arithmetic of scaling out, in one process.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_12_scaling_out.py --student

No process group is needed: each function computes what every one of ``world_size`` ranks
would hold, as a list indexed by rank, and the collective (the sum of an all-reduce, the
split sizes of an all-to-all) explicitly. Weights are in ``nn.Linear`` layout
(out_features, in_features).
"""

import torch

Op = tuple[str, int]  # ("F" or "B", micro-batch index)


def tensor_parallel_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor,
                        world_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The SwiGLU MLP w2(silu(w1 x) * w3 x) cut as the official inference code cuts it.

    x: (tokens, dim), replicated on every rank; w1, w3: (inter, dim); w2: (dim, inter).
    Rank r holds rows [r*inter/W, (r+1)*inter/W) of w1 and w3 (column-parallel, shard dim 0) and the
    same columns of w2 (row-parallel, shard dim 1), and computes a partial output (tokens, dim)
    from them alone. The all-reduce then sums the partial outputs.
    Returns (the sum, [partial output of rank 0, ..., rank W-1]).
    """
    raise NotImplementedError("tensor_parallel_mlp: column-parallel w1/w3, row-parallel w2, sum the partials")


def vocab_parallel_embedding(tokens: torch.Tensor, weight: torch.Tensor,
                             world_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The official ``ParallelEmbedding``: rank r holds rows [r*V/W, (r+1)*V/W) of the table.

    tokens: (batch, seq) int64; weight: (V, dim). Rank r looks up the tokens it owns and writes
    zeros for the others; the all-reduce sums the W results.
    Returns (the sum: (batch, seq, dim), [rank 0's (batch, seq, dim), ...]).
    """
    raise NotImplementedError("vocab_parallel_embedding: each rank's rows, zeros elsewhere, then the sum")


def all_to_all_splits(indices_per_rank: list[torch.Tensor], n_experts: int, world_size: int) -> torch.Tensor:
    """How many rows each rank sends to each rank in expert parallelism's dispatch.

    indices_per_rank[s]: (tokens_s, k) the experts chosen for rank s's tokens. Rank d owns experts
    [d*E/W, (d+1)*E/W). Every (token, expert) pair is one row sent from its token's rank to the
    expert's rank (a rank also "sends" to itself).
    Returns send: (W, W) int64, send[s, d] = rows rank s sends to rank d.
    """
    raise NotImplementedError("all_to_all_splits: count the (token, expert) pairs by source and destination rank")


def one_f_one_b(n_stages: int, n_micro_batches: int) -> list[list[Op]]:
    """The 1F1B pipeline schedule: for each stage, the order in which it runs its passes.

    Stage s first runs min(n_stages - 1 - s, n_micro_batches) warm-up forwards (micro-batches 0, 1, ...);
    then, until every backward is done, it alternates: the next forward (if any is left), then the
    next backward (micro-batches in order). Returns [[("F", 0), ("F", 1), ..., ("B", 0), ...], ...].
    """
    raise NotImplementedError("one_f_one_b: warm-up forwards, then one forward one backward")


def pipeline_makespan(schedule: list[list[Op]], forward: float, backward: float) -> float:
    """When the last pass of a pipeline schedule finishes.

    Stage s runs its ops in order, each taking ``forward`` or ``backward``. ("F", m) on stage s can
    start only after ("F", m) finished on stage s-1; ("B", m) on stage s only after ("B", m) finished
    on stage s+1 (on the last stage: after its own ("F", m)). Communication is free.
    """
    raise NotImplementedError("pipeline_makespan: run each stage's ops in order, waiting for the neighbours")


def node_limited_route(scores: torch.Tensor, bias: torch.Tensor, node_of_expert: torch.Tensor, max_nodes: int,
                       topk: int, route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """V3's node-limited routing (report section 2.1.2): every token's experts lie on at most ``max_nodes`` nodes.

    scores: (tokens, experts) the unbiased affinities; bias: (experts,) the balancing bias;
    node_of_expert: (experts,) int64, the node that hosts each expert (any placement: not necessarily
    contiguous; every node hosts the same number of experts); max_nodes: M; topk: K_r, a multiple of M.
    1. biased = scores + bias (only to choose);
    2. a node's score is the sum of the K_r / M highest biased scores among the experts it hosts;
    3. keep the M nodes with the highest scores; every expert on another node is excluded;
    4. choose the K_r experts with the highest biased scores among those left;
    5. weights = their UNBIASED scores, divided by their sum, times route_scale.
    Returns weights: (tokens, topk) and indices: (tokens, topk) int64, in any order.
    """
    raise NotImplementedError("node_limited_route: node scores from the top K_r / M experts of each node, "
                              "keep M nodes, then top-k among their experts")


def inter_node_sends(indices: torch.Tensor, node_of_expert: torch.Tensor, token_node: torch.Tensor,
                     n_nodes: int) -> torch.Tensor:
    """How many token copies cross the inter-node network (InfiniBand) in the dispatch.

    indices: (tokens, k) the chosen experts; token_node: (tokens,) the node each token starts on.
    A token travels ONCE to every other node hosting at least one of its experts (the node then forwards
    it to its GPUs over NVLink); experts on its own node cost no inter-node copy.
    Returns sends: (n_nodes, n_nodes) int64, sends[s, d] = tokens of node s copied to node d (diagonal 0).
    """
    raise NotImplementedError("inter_node_sends: one copy per token per distinct other node among its experts")
