"""Parameter accounting from the config alone: totals, activated parameters, memory.

Every number here is computed from tensor shapes written out below, not from a
built model, so the 671B model can be accounted for on a laptop. The tests check
the result against a model built on the ``meta`` device and against the published
figures (671,026,419,200 total; 37,552,297,472 activated per token).

"Activated" counts what one token touches: the attention, the norms, the shared
expert, the gate and only ``n_activated_experts`` of the routed experts in every
MoE layer, plus the embedding row and the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import ModelConfig

FP8_BLOCK = 128  # weights are quantised in 128 x 128 blocks, one float32 scale per block


@dataclass(frozen=True)
class Tensor:
    """One weight: its official name, shape, and whether the published checkpoint stores it in FP8."""

    name: str
    shape: tuple[int, ...]
    fp8: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def n_scales(self) -> int:
        """Elements of its ``weight_scale_inv``: one per 128 x 128 block, edge blocks included."""
        return math.ceil(self.shape[0] / FP8_BLOCK) * math.ceil(self.shape[1] / FP8_BLOCK) if self.fp8 else 0


def attention_tensors(c: ModelConfig) -> list[Tensor]:
    heads = c.n_heads
    if c.attention != "mla":  # the MHA / GQA / MQA baselines of chapter 13 (baselines.py)
        return [Tensor("wq", (heads * c.qk_head_dim, c.dim)), Tensor("wk", (c.kv_heads * c.qk_head_dim, c.dim)),
                Tensor("wv", (c.kv_heads * c.v_head_dim, c.dim)), Tensor("wo", (c.dim, heads * c.v_head_dim))]
    if c.q_lora_rank == 0:
        query = [Tensor("wq", (heads * c.qk_head_dim, c.dim), True)]
    else:
        query = [Tensor("wq_a", (c.q_lora_rank, c.dim), True), Tensor("q_norm", (c.q_lora_rank,)),
                 Tensor("wq_b", (heads * c.qk_head_dim, c.q_lora_rank), True)]
    return query + [
        Tensor("wkv_a", (c.kv_lora_rank + c.qk_rope_head_dim, c.dim), True),
        Tensor("kv_norm", (c.kv_lora_rank,)),
        Tensor("wkv_b", (heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank), True),
        Tensor("wo", (c.dim, heads * c.v_head_dim), True),
    ]


def indexer_tensors(c: ModelConfig) -> list[Tensor]:
    """DeepSeek-V3.2's lightning indexer in one layer (none for V3): 13,959,424 parameters at V3.2's size."""
    if not c.has_indexer:
        return []
    return [Tensor("indexer.wq_b", (c.index_n_heads * c.index_head_dim, c.q_lora_rank), True),
            Tensor("indexer.wk", (c.index_head_dim, c.dim), True),
            Tensor("indexer.k_norm.weight", (c.index_head_dim,)), Tensor("indexer.k_norm.bias", (c.index_head_dim,)),
            Tensor("indexer.weights_proj", (c.index_n_heads, c.dim))]


def mlp_tensors(dim: int, inter_dim: int, prefix: str) -> list[Tensor]:
    return [Tensor(f"{prefix}.w1", (inter_dim, dim), True), Tensor(f"{prefix}.w2", (dim, inter_dim), True),
            Tensor(f"{prefix}.w3", (inter_dim, dim), True)]


def gate_tensors(c: ModelConfig) -> list[Tensor]:
    gate = [Tensor("gate.weight", (c.n_routed_experts, c.dim))]  # the router stays BF16 in the checkpoint
    return gate + ([Tensor("gate.bias", (c.n_routed_experts,))] if c.gate_bias else [])


@dataclass
class Row:
    """One line of the table: a component, its size in one layer, and in how many layers it appears."""

    component: str
    per_layer: int
    layers: int
    activated_per_layer: int

    @property
    def total(self) -> int:
        return self.per_layer * self.layers

    @property
    def activated(self) -> int:
        return self.activated_per_layer * self.layers


@dataclass
class ParameterCount:
    config: ModelConfig
    rows: list[Row] = field(default_factory=list)
    mtp: int = 0  # unique parameters of the MTP modules (embedding and head are shared)
    fp8_weights: int = 0  # main-model elements stored as float8 in the published format
    fp8_scales: int = 0  # float32 weight_scale_inv elements of the main model
    indexer: int = 0  # parameters of one layer's lightning indexer (V3.2), included in the totals

    @property
    def indexers(self) -> int:
        """All the main model's indexers (one per layer; the MTP modules' ones are in ``mtp``)."""
        return self.indexer * self.config.n_layers

    @property
    def total(self) -> int:
        return sum(row.total for row in self.rows)

    @property
    def activated(self) -> int:
        """Per token, counting the input embedding and the output head."""
        return sum(row.activated for row in self.rows)

    @property
    def activated_without_embedding(self) -> int:
        return self.activated - self.config.vocab_size * self.config.dim

    @property
    def kv_cache_latent(self) -> int:
        """MLA caches per token per layer: the latent and the shared rotated key (576 for V3)."""
        return self.config.kv_lora_rank + self.config.qk_rope_head_dim

    @property
    def kv_cache_per_head(self) -> int:
        """A cache of the expanded per-head keys and values per token per layer (40,960 for V3)."""
        c = self.config
        return c.n_heads * (c.qk_head_dim + c.v_head_dim)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes one token adds to the cache in BF16, over all layers, for the configured attention
        (MLA's latent, or a baseline's per-head keys and values)."""
        return 2 * self.config.kv_cache_values * self.config.n_layers

    @property
    def bytes_bf16(self) -> int:
        """Weights in BF16, the gate bias in float32."""
        bias = self.config.n_routed_experts * self._moe_layers if self.config.gate_bias and not self.config.dense_ffn_dim else 0
        k_norms = 2 * self.config.index_head_dim * self.config.n_layers if self.config.has_indexer else 0
        return 2 * self.total + 2 * bias + 2 * k_norms  # the indexers' k_norm is float32 too

    @property
    def bytes_fp8(self) -> int:
        """The published layout: FP8 linears + float32 scales, BF16 elsewhere, float32 gate bias."""
        return self.fp8_weights + 4 * self.fp8_scales + (self.bytes_bf16 - 2 * self.fp8_weights)

    @property
    def _moe_layers(self) -> int:
        return self.config.n_layers - self.config.n_dense_layers

    def table(self) -> str:
        """A human-readable report (what ``minideepseek info`` prints)."""
        c = self.config
        lines = [f"{'component':<28}{'per layer':>18}{'layers':>8}{'total':>20}{'activated':>20}"]
        for row in self.rows:
            lines.append(f"{row.component:<28}{row.per_layer:>18,}{row.layers:>8}{row.total:>20,}{row.activated:>20,}")
        lines += [
            "-" * 94,
            f"{'total parameters':<54}{self.total:>20,}",
            f"{'activated per token (with embedding and head)':<54}{self.activated:>20,}",
            f"{'activated per token (without input embedding)':<54}{self.activated_without_embedding:>20,}",
            f"{'MTP modules (unique, %d deep)' % c.n_mtp_layers:<54}{self.mtp:>20,}",
            "",
            f"KV cache per token per layer: {self.kv_cache_latent:,} values (MLA latent "
            f"{c.kv_lora_rank} + rope key {c.qk_rope_head_dim}) vs {self.kv_cache_per_head:,} for a per-head "
            f"cache ({self.kv_cache_per_head / self.kv_cache_latent:.1f}x less)" if c.attention == "mla" else
            f"KV cache per token per layer: {c.kv_cache_values:,} values ({c.attention.upper()}: {c.kv_heads} "
            f"key/value heads x ({c.qk_head_dim} + {c.v_head_dim})) vs {self.kv_cache_latent:,} for MLA",
            f"KV cache per token, all {c.n_layers} layers: {c.kv_cache_values * c.n_layers:,} values "
            f"({self.kv_bytes_per_token / 1024:,.1f} KiB in BF16)",
            f"weights in BF16: {human_bytes(self.bytes_bf16)}; in FP8 (128x128 blocks, "
            f"{self.fp8_scales:,} float32 scales): {human_bytes(self.bytes_fp8)}",
        ]
        return "\n".join(lines)


def human_bytes(n: int) -> str:
    for unit, factor in [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)]:
        if n >= factor:
            return f"{n / factor:,.2f} {unit}"
    return f"{n} B"


def size(tensors: list[Tensor]) -> int:
    return sum(t.numel for t in tensors)


def count_parameters(config: ModelConfig) -> ParameterCount:
    """Count every parameter of ``Transformer(config)`` from shapes alone."""
    c = config
    attention = attention_tensors(c)
    indexer = indexer_tensors(c)
    dense_mlp = mlp_tensors(c.dim, c.inter_dim, "ffn")
    expert = mlp_tensors(c.dim, c.moe_inter_dim, "expert")
    shared = mlp_tensors(c.dim, c.n_shared_experts * c.moe_inter_dim, "shared_experts")
    gate = gate_tensors(c)
    n_moe = c.n_layers - c.n_dense_layers
    if c.dense_ffn_dim:  # the dense baseline of chapter 13: a dense MLP where V3 has DeepSeekMoE
        ffn = mlp_tensors(c.dim, c.dense_ffn_dim, "ffn")
        ffn_rows = [Row(f"dense MLP ({c.dense_ffn_dim}, replaces MoE)", size(ffn), n_moe, size(ffn))]
        ffn_layer, one_expert, unrouted = size(ffn), [], ffn
    else:
        ffn_rows = [
            Row(f"routed experts ({c.n_activated_experts}/{c.n_routed_experts})", c.n_routed_experts * size(expert),
                n_moe, c.n_activated_experts * size(expert)),
            Row("shared experts", size(shared), n_moe if c.n_shared_experts else 0, size(shared)),
            Row("gate (+ bias)" if c.gate_bias else "gate", size(gate), n_moe, size(gate)),
        ]
        ffn_layer, one_expert, unrouted = c.n_routed_experts * size(expert) + size(shared) + size(gate), expert, shared

    rows = [
        Row("embedding (embed)", c.vocab_size * c.dim, 1, c.dim * c.vocab_size),
        Row(f"attention ({c.attention.upper()})", size(attention), c.n_layers, size(attention)),
        Row("lightning indexer (DSA)", size(indexer), c.n_layers if indexer else 0, size(indexer)),
        Row("block norms", 2 * c.dim, c.n_layers, 2 * c.dim),
        Row("dense MLP", size(dense_mlp), c.n_dense_layers, size(dense_mlp)),
        *ffn_rows,
        Row("final norm", c.dim, 1, c.dim),
        Row("output head (head)", 0 if c.tie_word_embeddings else c.vocab_size * c.dim, 1,
            0 if c.tie_word_embeddings else c.vocab_size * c.dim),
    ]
    rows = [row for row in rows if row.layers > 0]
    moe_layer = size(attention) + size(indexer) + 2 * c.dim + ffn_layer
    mtp_module = 2 * c.dim + 2 * c.dim * c.dim + moe_layer + c.dim  # enorm, hnorm, eh_proj, block, norm

    # Every tensor the published format stores in FP8, over all main-model layers.
    fp8 = [t for t in ((attention + indexer) * c.n_layers + dense_mlp * c.n_dense_layers
                       + (one_expert * c.n_routed_experts + unrouted) * n_moe) if t.fp8]
    return ParameterCount(
        config=c, rows=rows, mtp=c.n_mtp_layers * mtp_module,
        fp8_weights=sum(t.numel for t in fp8), fp8_scales=sum(t.n_scales for t in fp8), indexer=size(indexer),
    )


def training_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Model FLOPs of one training token (forward + backward), the PaLM / nanoGPT / torchtitan convention:

        6 * N_active + 6 * L * n_heads * (qk_head_dim + v_head_dim) * seq_len

    * 6 N: 2 FLOPs per multiply-add, times 3 (forward, and backward for inputs and weights).
    * N_active: the weights one token multiplies: attention, norms, dense MLPs, the gate, shared
      experts, n_activated_experts of the routed experts, and the output head; not the input
      embedding (a lookup). Each MTP depth adds its block, enorm/hnorm/eh_proj, norm and one more
      head matmul.
    * The attention term counts q k^T and p v for every layer L (MTP blocks included) over the full
      sequence: it is not halved for the causal mask, and flash's backward recomputation is not counted.
    """
    c = config
    expert = size(mlp_tensors(c.dim, c.moe_inter_dim, "expert"))
    ffn = (size(mlp_tensors(c.dim, c.dense_ffn_dim, "ffn")) if c.dense_ffn_dim else  # the dense ablation baseline
           c.n_activated_experts * expert + size(mlp_tensors(c.dim, c.n_shared_experts * c.moe_inter_dim, "shared"))
           + size(gate_tensors(c)))
    moe_block = size(attention_tensors(c)) + 2 * c.dim + ffn
    head = c.vocab_size * c.dim
    main = count_parameters(c).activated_without_embedding + (head if c.tie_word_embeddings else 0)
    mtp = c.n_mtp_layers * (2 * c.dim + 2 * c.dim * c.dim + moe_block + c.dim + head)
    attention = 6 * (c.n_layers + c.n_mtp_layers) * c.n_heads * (c.qk_head_dim + c.v_head_dim) * seq_len
    return 6 * (main + mtp) + attention
