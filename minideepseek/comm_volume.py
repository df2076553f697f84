"""How many bytes each kind of parallelism moves, computed from a ``ModelConfig``.

Every way of splitting a model over GPUs trades memory for communication. For one
token (or one optimizer step), with activations of ``dim`` numbers:

* **data parallel** (DDP, ZeRO/FSDP): each rank holds the whole model (or a shard of its
  optimizer state) and processes its own tokens; once per step the gradients are
  all-reduced. A ring all-reduce sends 2 (N-1)/N times the gradient's bytes per rank.
* **tensor parallel** (Megatron, the official inference layout): each layer's matrices are
  split, so every layer needs all-reduces of the whole hidden state: 2 in the forward
  pass (after MLA's ``wo`` and after the FFN's ``w2``) and 2 in the backward pass.
* **expert parallel**: each token's hidden state travels to the ranks of its k routed
  experts (dispatch) and the k results travel back (combine), forward and backward.
* **pipeline parallel**: only the hidden state at a stage boundary travels, once forward
  and once (its gradient) backward.

DeepSeek-V3 trains with 16-way pipeline, 64-way expert parallelism over 8 nodes and
ZeRO-1 data parallelism, and no tensor parallelism (report section 3.2): tensor
parallelism would put 4 all-reduces of the hidden state in every one of the 61 layers.

Node-limited routing (section 2.1.2, 3.2.2): a token is dispatched once per *node* over
InfiniBand (IB, 50 GB/s per GPU) and fanned out to the experts inside the node over
NVLink (160 GB/s). V3 groups its 256 experts into 8 groups of 32, one per node, and
lets each token use at most 4 groups (``n_limited_groups``), so its IB traffic is at
most 4 copies instead of up to 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb

from .config import ModelConfig
from .params import count_parameters

BF16 = 2  # bytes per number
FP8_WITH_SCALES = 1 + 4 / 128  # an e4m3 byte plus one float32 scale per 128 numbers (V3's dispatch format)


def ring_all_reduce_factor(ranks: int) -> float:
    """Bytes a rank sends in a ring all-reduce, per byte of the reduced tensor: 2 (N-1)/N."""
    return 2 * (ranks - 1) / ranks


def tensor_parallel_bytes(config: ModelConfig, tp: int, act_bytes: float = BF16) -> float:
    """Network bytes (summed over the tp ranks) per token per layer, forward and backward.

    4 ring all-reduces of the hidden state, each rank sending 2 (tp-1)/tp of it: 8 (tp-1) dim bytes.
    """
    return 4 * tp * ring_all_reduce_factor(tp) * config.dim * act_bytes


def expert_parallel_bytes(config: ModelConfig, dispatch_bytes: float = FP8_WITH_SCALES,
                          combine_bytes: float = BF16) -> float:
    """Network bytes per token per MoE layer (upper bound: all k experts on other ranks), forward and backward.

    Forward: dispatch k copies (FP8 in V3) and combine k results (BF16). Backward: the gradients
    take the reverse routes, in BF16.
    """
    k, dim = config.n_activated_experts, config.dim
    return k * dim * (dispatch_bytes + combine_bytes) + 2 * k * dim * BF16


def pipeline_bytes(config: ModelConfig, act_bytes: float = BF16) -> float:
    """Network bytes per token per stage boundary: the hidden state forward, its gradient backward."""
    return 2 * config.dim * act_bytes


def routed_expert_parameters(config: ModelConfig) -> int:
    """Parameters of all routed experts (main layers and MTP): what expert parallelism shards."""
    moe_layers = config.n_layers - config.n_dense_layers + config.n_mtp_layers
    return moe_layers * config.n_routed_experts * 3 * config.dim * config.moe_inter_dim


def data_parallel_bytes(n_parameters: int, dp: int, grad_bytes: float = BF16) -> float:
    """Bytes *one rank* sends per optimizer step to all-reduce the gradients of ``n_parameters``."""
    return ring_all_reduce_factor(dp) * n_parameters * grad_bytes


# --------------------------------------------------------------------------- node-limited routing
def nodes_per_token(n_experts: int, n_nodes: int, k: int) -> dict[int, Fraction]:
    """P(a token's k experts lie on exactly j nodes) if the k are any k distinct experts, equally likely.

    Experts are spread evenly, n_experts / n_nodes per node. Inclusion-exclusion over the j nodes:
    ways to pick k experts within j given nodes, using each of them = sum_i (-1)^i C(j,i) C((j-i) m, k).
    """
    per_node = n_experts // n_nodes
    total = comb(n_experts, k)
    out = {}
    for j in range(1, min(n_nodes, k) + 1):
        covering = sum((-1) ** i * comb(j, i) * comb((j - i) * per_node, k) for i in range(j + 1))
        if covering:
            out[j] = Fraction(comb(n_nodes, j) * covering, total)
    return out


def expected_nodes_per_token(n_experts: int, n_nodes: int, k: int) -> float:
    """Mean number of nodes a token is sent to without a node limit: n_nodes (1 - C(E - m, k) / C(E, k))."""
    per_node = n_experts // n_nodes
    return n_nodes * (1 - comb(n_experts - per_node, k) / comb(n_experts, k))


# --------------------------------------------------------------------------- the table for a config
@dataclass(frozen=True)
class VolumeRow:
    parallelism: str
    what_travels: str
    unit: str
    bytes: float


def volume_table(config: ModelConfig, tp: int = 8, dp: int = 16, pp: int = 16) -> list[VolumeRow]:
    """Each parallelism's traffic for ``config``: network bytes per token through the whole model, or
    bytes per rank per optimizer step (data parallel)."""
    moe_layers = config.n_layers - config.n_dense_layers
    replicated = _total_parameters(config) - routed_expert_parameters(config)
    return [
        VolumeRow("tensor (TP=%d)" % tp, "4 all-reduces of the hidden state per layer",
                  "per token, all layers", tensor_parallel_bytes(config, tp) * config.n_layers),
        VolumeRow("expert", "k copies out (FP8), k results back (BF16), and the reverse in backward",
                  "per token, all MoE layers", expert_parallel_bytes(config) * moe_layers),
        VolumeRow("pipeline (PP=%d)" % pp, "the hidden state at each stage boundary, and its gradient",
                  "per token, all boundaries", pipeline_bytes(config) * (pp - 1)),
        VolumeRow("data (DP=%d)" % dp, "BF16 gradients of the non-expert parameters, ring all-reduce",
                  "per rank per step", data_parallel_bytes(replicated, dp)),
    ]


def _total_parameters(config: ModelConfig) -> int:
    count = count_parameters(config)
    return count.total + count.mtp


def format_volume_table(rows: list[VolumeRow]) -> str:
    width = max(len(r.parallelism) for r in rows)
    return "\n".join(f"{r.parallelism:<{width}}  {_human(r.bytes):>9}  {r.unit:<26} {r.what_travels}" for r in rows)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
