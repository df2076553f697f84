"""Which tensors a DeepSeek-V3 checkpoint holds, under which names, with which shapes.

A checkpoint is a list of named tensors. Three naming schemes describe the same weights:

* **ours** = the official inference code's module names (``layers.3.attn.wq_a.weight``); the MTP
  modules are ``mtp.{k}.*`` (the official code has no MTP);
* the **hub** names of ``deepseek-ai/DeepSeek-V3`` (``model.layers.3.self_attn.q_a_proj.weight``),
  the MTP module stored as one extra decoder layer ``model.layers.{n_layers + k}``, which also keeps
  its own copies of ``embed_tokens`` and ``lm_head`` (``shared_head.head``);
* the **official** files written by ``inference/convert.py``: our names split over
  ``model{rank}-mp{world}.safetensors`` for model parallelism, MTP dropped.

In an FP8 checkpoint every linear weight of attention and feed-forward is stored as
``float8_e4m3fn`` next to a float32 scale of shape ``[ceil(out/128), ceil(in/128)]``
(``weight_scale_inv`` on the hub, ``scale`` in official files). The embedding, the head, the
norms, the router and ``eh_proj`` stay BF16; the router's correction bias is float32.

DeepSeek-V3.2 adds a lightning indexer to every attention layer, stored under its official names in
both formats (``self_attn.indexer.{wq_b,wk,k_norm,weights_proj}`` on the hub): ``wq_b`` and ``wk`` in
FP8 with scales, ``k_norm``'s weight and bias in float32, ``weights_proj`` unquantised; the official
files repeat the whole indexer in every rank.

Every function here works from the config alone, so the layout of the 671B model (91,991
tensors) is known without building or reading anything.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .config import ModelConfig

BLOCK = 128  # FP8 weights carry one scale per 128 x 128 block

# Roles: what the release stores a tensor as.
LINEAR = "linear"  # a projection, FP8 in the release
PLAIN = "plain"  # embedding, head, norms, router, eh_proj: BF16 in the release
FP32 = "fp32"  # the router's correction bias: always float32
SCALE = "scale"  # the float32 block scales of an FP8 linear
COPY = "copy"  # the MTP layer's duplicate of the embedding or the head


@dataclass(frozen=True)
class TensorSpec:
    """One stored tensor: its shape, its role, and the parameter of ours it belongs to.

    ``ours`` is the parameter it loads into (for a scale: the weight it scales; for an MTP copy:
    the main tensor it duplicates). ``split_dim`` is the dimension the official files cut it along
    across model-parallel ranks (None: whole in every rank, or, for a routed expert, in one rank).
    """

    shape: tuple[int, ...]
    role: str
    ours: str
    split_dim: int | None = None


def scale_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """[ceil(out/128), ceil(in/128)]: the partial blocks at the right and bottom edges get a scale too."""
    rows, cols = shape
    return math.ceil(rows / BLOCK), math.ceil(cols / BLOCK)


# --8<-- [start:model_layout]
def model_layout(config: ModelConfig) -> dict[str, TensorSpec]:
    """Every parameter of ``Transformer(config)``, in our names (the official ones), in file order."""
    c = config
    specs = {"embed.weight": TensorSpec((c.vocab_size, c.dim), PLAIN, "embed.weight")}
    for layer_id in range(c.n_layers):
        specs.update(_block_layout(f"layers.{layer_id}.", layer_id, c))
    specs["norm.weight"] = TensorSpec((c.dim,), PLAIN, "norm.weight")
    if not c.tie_word_embeddings:  # tied: the head *is* the embedding, stored once
        specs["head.weight"] = TensorSpec((c.vocab_size, c.dim), PLAIN, "head.weight")
    for k in range(c.n_mtp_layers):
        p = f"mtp.{k}."
        specs.update({
            p + "enorm.weight": TensorSpec((c.dim,), PLAIN, p + "enorm.weight"),
            p + "hnorm.weight": TensorSpec((c.dim,), PLAIN, p + "hnorm.weight"),
            p + "eh_proj.weight": TensorSpec((c.dim, 2 * c.dim), PLAIN, p + "eh_proj.weight"),
        })
        specs.update(_block_layout(p + "block.", c.n_layers + k, c))
        specs[p + "norm.weight"] = TensorSpec((c.dim,), PLAIN, p + "norm.weight")
    return specs


def _block_layout(prefix: str, layer_id: int, c: ModelConfig) -> dict[str, TensorSpec]:
    qk_head_dim = c.qk_nope_head_dim + c.qk_rope_head_dim
    shapes: dict[str, tuple[tuple[int, ...], str]] = {"attn_norm": ((c.dim,), PLAIN)}
    if c.q_lora_rank == 0:
        shapes["attn.wq"] = ((c.n_heads * qk_head_dim, c.dim), LINEAR)
    else:
        shapes["attn.wq_a"] = ((c.q_lora_rank, c.dim), LINEAR)
        shapes["attn.q_norm"] = ((c.q_lora_rank,), PLAIN)
        shapes["attn.wq_b"] = ((c.n_heads * qk_head_dim, c.q_lora_rank), LINEAR)
    shapes["attn.wkv_a"] = ((c.kv_lora_rank + c.qk_rope_head_dim, c.dim), LINEAR)  # 576 rows: latent | k_pe
    shapes["attn.kv_norm"] = ((c.kv_lora_rank,), PLAIN)
    shapes["attn.wkv_b"] = ((c.n_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank), LINEAR)
    shapes["attn.wo"] = ((c.dim, c.n_heads * c.v_head_dim), LINEAR)
    if c.has_indexer:  # DeepSeek-V3.2's lightning indexer (indexer.py); its k_norm also has a bias, below
        shapes["attn.indexer.wq_b"] = ((c.index_n_heads * c.index_head_dim, c.q_lora_rank), LINEAR)
        shapes["attn.indexer.wk"] = ((c.index_head_dim, c.dim), LINEAR)
        shapes["attn.indexer.k_norm"] = ((c.index_head_dim,), FP32)
        shapes["attn.indexer.weights_proj"] = ((c.index_n_heads, c.dim), PLAIN)
    shapes["ffn_norm"] = ((c.dim,), PLAIN)
    if not c.is_moe_layer(layer_id):
        shapes.update(_mlp_shapes("ffn.", c.dim, c.inter_dim))
    else:
        shapes["ffn.gate"] = ((c.n_routed_experts, c.dim), PLAIN)
        for e in range(c.n_routed_experts):
            shapes.update(_mlp_shapes(f"ffn.experts.{e}.", c.dim, c.moe_inter_dim))
        if c.n_shared_experts:
            shapes.update(_mlp_shapes("ffn.shared_experts.", c.dim, c.n_shared_experts * c.moe_inter_dim))
    specs = {prefix + name + ".weight": TensorSpec(shape, role, prefix + name + ".weight")
             for name, (shape, role) in shapes.items()}
    if c.has_indexer:
        name = prefix + "attn.indexer.k_norm.bias"
        specs[name] = TensorSpec((c.index_head_dim,), FP32, name)
    if c.is_moe_layer(layer_id) and c.gate_bias:
        specs[prefix + "ffn.gate.bias"] = TensorSpec((c.n_routed_experts,), FP32, prefix + "ffn.gate.bias")
    return specs


def _mlp_shapes(prefix: str, dim: int, inter_dim: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return {prefix + "w1": ((inter_dim, dim), LINEAR), prefix + "w2": ((dim, inter_dim), LINEAR),
            prefix + "w3": ((inter_dim, dim), LINEAR)}
# --8<-- [end:model_layout]


# ------------------------------------------------------------------------------------------- hub
# --8<-- [start:hub_names]
# One dotted component of our name -> the hub's (inference/convert.py's table, read backwards).
_HUB_COMPONENT = {
    "embed": "embed_tokens", "attn": "self_attn", "ffn": "mlp",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "wq": "q_proj", "wq_a": "q_a_proj", "q_norm": "q_a_layernorm", "wq_b": "q_b_proj",
    "wkv_a": "kv_a_proj_with_mqa", "kv_norm": "kv_a_layernorm", "wkv_b": "kv_b_proj", "wo": "o_proj",
    "w1": "gate_proj", "w2": "down_proj", "w3": "up_proj", "bias": "e_score_correction_bias",
}


def hub_name(ours: str, n_layers: int) -> str:
    """Our parameter name -> its hub name.

    ``layers.3.ffn.experts.7.w1.weight`` -> ``model.layers.3.mlp.experts.7.gate_proj.weight``;
    ``head.weight`` -> ``lm_head.weight``; MTP module k is decoder layer ``n_layers + k``:
    ``mtp.0.block.attn.wq_a.weight`` -> ``model.layers.61.self_attn.q_a_proj.weight``,
    ``mtp.0.norm.weight`` -> ``model.layers.61.shared_head.norm.weight``.
    """
    parts = ours.split(".")
    if parts[0] == "head":
        return "lm_head." + ".".join(parts[1:])
    if parts[0] == "mtp":
        rest = parts[2:]
        if rest[0] == "block":  # the MTP block's tensors sit directly in the extra layer
            rest = rest[1:]
        elif rest[0] == "norm":
            rest = ["shared_head"] + rest
        parts = ["layers", str(n_layers + int(parts[1]))] + rest
    if parts[0] == "layers":  # the part after the layer number repeats in every layer: rename it once
        return f"model.layers.{parts[1]}.{_hub_components('.'.join(parts[2:]))}"
    return "model." + _hub_components(".".join(parts))


@functools.lru_cache(maxsize=None)
def _hub_components(name: str) -> str:
    if ".indexer." in name:  # the V3.2 indexer's tensors keep their official names on the hub
        attention, rest = name.split(".indexer.", 1)
        return f"{_hub_components(attention)}.indexer.{rest}"
    return ".".join(_HUB_COMPONENT.get(part, part) for part in name.split("."))
# --8<-- [end:hub_names]


def hub_scale_name(weight_name: str) -> str:
    return weight_name + "_scale_inv"  # X.weight -> X.weight_scale_inv


def hub_layout(config: ModelConfig, fp8: bool) -> dict[str, TensorSpec]:
    """The tensors of a hub checkpoint (``model.safetensors[.index.json]``), by hub name.

    With ``fp8`` every LINEAR weight is followed by its ``weight_scale_inv``. Each MTP layer
    also stores copies of the embedding and the head (role COPY), as the published files do.
    """
    return dict(_hub_layout(config, fp8))  # a copy: the cached one is shared


@functools.lru_cache(maxsize=4)  # 92,000 names for the 671B model: computed once per config
def _hub_layout(config: ModelConfig, fp8: bool) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for ours, spec in model_layout(config).items():
        name = hub_name(ours, config.n_layers)
        specs[name] = spec
        if fp8 and spec.role == LINEAR:
            specs[hub_scale_name(name)] = TensorSpec(scale_shape(spec.shape), SCALE, ours)
    head = "embed.weight" if config.tie_word_embeddings else "head.weight"
    for k in range(config.n_mtp_layers):
        layer = f"model.layers.{config.n_layers + k}."
        embedding_shape = (config.vocab_size, config.dim)
        specs[layer + "embed_tokens.weight"] = TensorSpec(embedding_shape, COPY, "embed.weight")
        specs[layer + "shared_head.head.weight"] = TensorSpec(embedding_shape, COPY, head)
    return specs


# -------------------------------------------------------------------------------------- official
# The dimension inference/convert.py cuts each tensor along (None: every rank holds it whole).
OFFICIAL_SPLIT_DIM = {"embed": 0, "head": 0, "wq": 0, "wq_b": 0, "wkv_b": 0, "wo": 1, "w1": 0, "w2": 1, "w3": 0}


def official_scale_name(weight_name: str) -> str:
    return weight_name.removesuffix("weight") + "scale"  # X.weight -> X.scale


def routed_expert(ours: str) -> int | None:
    """The expert index of a routed expert's tensor (``layers.N.ffn.experts.E.*``), else None."""
    parts = ours.split(".")
    return int(parts[parts.index("experts") + 1]) if "experts" in parts else None


def official_layout(config: ModelConfig, world_size: int, fp8: bool) -> list[dict[str, TensorSpec]]:
    """The tensors of each ``model{rank}-mp{world_size}.safetensors``, as ``inference/convert.py`` writes them.

    Routed experts are dealt out whole (rank r holds experts r*E/W .. (r+1)*E/W - 1); the tensors in
    ``OFFICIAL_SPLIT_DIM`` are cut into ``world_size`` equal slices, their FP8 scales along the same
    dimension; everything else is repeated in every rank. The MTP modules are not part of this format.
    Raises ValueError when a dimension does not divide (convert.py asserts the same).
    """
    if config.n_routed_experts % world_size:
        raise ValueError(f"n_routed_experts={config.n_routed_experts} is not divisible by world_size={world_size}")
    experts_per_rank = config.n_routed_experts // world_size
    ranks: list[dict[str, TensorSpec]] = [{} for _ in range(world_size)]
    for ours, spec in model_layout(config).items():
        if ours.startswith("mtp."):
            continue
        expert = routed_expert(ours)
        split_dim = OFFICIAL_SPLIT_DIM.get(ours.split(".")[-2]) if expert is None else None
        if ".indexer." in ours:  # convert.py maps the indexer's own names (wq_b, wk, ...) to "not split"
            split_dim = None
        shape = spec.shape
        if split_dim is not None:
            shape = _split_shape(ours, shape, split_dim, world_size, fp8 and spec.role == LINEAR)
        stored = TensorSpec(shape, spec.role, ours, split_dim)
        holders = [expert // experts_per_rank] if expert is not None else range(world_size)
        for rank in holders:
            ranks[rank][ours] = stored
            if fp8 and spec.role == LINEAR:
                ranks[rank][official_scale_name(ours)] = TensorSpec(scale_shape(shape), SCALE, ours, split_dim)
    return ranks


def _split_shape(name: str, shape: tuple[int, ...], dim: int, world_size: int, fp8: bool) -> tuple[int, ...]:
    size = shape[dim]
    if size % world_size:
        raise ValueError(f"{name}: dimension {dim} of shape {shape} does not divide into {world_size} ranks")
    part = size // world_size
    if fp8 and world_size > 1 and part % BLOCK:
        raise ValueError(f"{name}: a slice of {part} along dimension {dim} would cut FP8 scale blocks of {BLOCK}; "
                         f"FP8 official files need every slice to be a multiple of {BLOCK}")
    return shape[:dim] + (part,) + shape[dim + 1:]
