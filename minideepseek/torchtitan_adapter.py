"""Our state dict <-> torchtitan's DeepSeek-V3 names, so training can continue in torchtitan.

torchtitan (pytorch/torchtitan, ``torchtitan/models/deepseek_v3``) trains DeepSeek-V3 at
cluster scale with PyTorch's own parallelism: FSDP2, tensor, expert, pipeline and
context parallelism, float8, checkpointing with ``torch.distributed.checkpoint``. Its
model is built like ours from the same parts, under different names, and with the
routed experts of a layer stacked into three 3-D tensors ("grouped experts") instead of
one module per expert:

    ours (official inference names)            torchtitan
    embed.weight                               tok_embeddings.weight
    layers.N.attn_norm / ffn_norm              layers.N.attention_norm / ffn_norm
    layers.N.attn.{wq | wq_a, q_norm, wq_b, wkv_a, kv_norm, wkv_b, wo}
                                               layers.N.attention.{same names}
    layers.N.ffn.{w1,w2,w3} (dense layers)     layers.N.feed_forward.{w1,w2,w3}
    layers.N.ffn.gate.weight                   layers.N.moe.router.gate.weight
    layers.N.ffn.gate.bias                     layers.N.moe.expert_bias
    layers.N.ffn.experts.E.w1.weight  (E = 0..n-1, each (inter, dim))
                                               layers.N.moe.experts.w1  (n, inter, dim), stacked
    layers.N.ffn.experts.E.w2.weight  (dim, inter)
                                               layers.N.moe.experts.w2  (n, dim, inter)
    layers.N.ffn.shared_experts.{w1,w2,w3}     layers.N.moe.shared_experts.{w1,w2,w3}
    norm.weight, head.weight                   norm.weight, output.weight

The table follows one version of torchtitan: the ``DeepSeekV3StateDictAdapter``
(``from_hf_map``) of ``torchtitan/models/deepseek_v3/model/state_dict_adapter.py`` (commit
``0d5fdba0c14176dc8fa76078c45d48f5d80b29e1``) and its ``GroupedExperts`` layout (w1, w3:
(experts, hidden, dim); w2: (experts, dim, hidden)). torchtitan renames things as it evolves:
later versions call the head ``lm_head.weight`` and the bias ``moe.expert_bias_E``, and after its
MoE refactor the stacked experts live at ``moe.routed_experts.inner_experts.{w1_EFD, w3_EFD,
w2_EDF}`` (same shapes). Those versions also train an MTP module (``mtp_layers.{i}``, built like
ours: ``eh_proj`` of ``[enorm(emb); hnorm(h)]`` with ``h`` taken before the final norm, then a block
and ``mtp_norm``). This adapter maps none of that: rename the keys for a newer torchtitan, and
note that ``to_torchtitan`` drops our MTP module (``convert.py`` does the same for the official
files) and ``from_torchtitan`` returns none: load it with ``strict=False`` into a model with MTP, or
build one without.
"""

from __future__ import annotations

import re

import torch

from .config import ModelConfig

# Inside layer N: our name prefix -> torchtitan's (the rest of the name is kept).
_LAYER_PREFIXES = [
    ("attn_norm.", "attention_norm."),
    ("ffn_norm.", "ffn_norm."),
    ("attn.", "attention."),
    ("ffn.gate.bias", "moe.expert_bias"),
    ("ffn.gate.", "moe.router.gate."),
    ("ffn.shared_experts.", "moe.shared_experts."),
    ("ffn.w", "feed_forward.w"),  # a dense layer's MLP (routed experts are stacked instead)
]
_TOP_LEVEL = [("embed.weight", "tok_embeddings.weight"), ("norm.weight", "norm.weight"),
              ("head.weight", "output.weight")]
_EXPERT = re.compile(r"layers\.(\d+)\.ffn\.experts\.(\d+)\.(w[123])\.weight")
_GROUPED = re.compile(r"layers\.(\d+)\.moe\.experts\.(w[123])")


def _rename(key: str, top_level: dict[str, str], prefixes: list[tuple[str, str]]) -> str:
    if key in top_level:
        return top_level[key]
    match = re.fullmatch(r"layers\.(\d+)\.(.+)", key)
    for old, new in prefixes if match else []:
        if match[2].startswith(old):
            return f"layers.{match[1]}.{new}{match[2][len(old):]}"
    raise KeyError(f"no matching name for {key!r}")


# --8<-- [start:to_torchtitan]
def to_torchtitan(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our full state dict (``Transformer.state_dict()``) in torchtitan's DeepSeek-V3 names and shapes.

    Per-expert weights are stacked along a new first dim, in expert order. MTP modules are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if key.startswith("mtp."):
            continue
        match = _EXPERT.fullmatch(key)
        if match:
            experts.setdefault((match[1], match[3]), {})[int(match[2])] = tensor
        else:
            out[_rename(key, dict(_TOP_LEVEL), _LAYER_PREFIXES)] = tensor
    for (layer, weight), per_expert in experts.items():
        missing = sorted(set(range(config.n_routed_experts)) - set(per_expert))
        if missing:
            raise ValueError(f"layer {layer} {weight}: experts {missing[:8]} are missing; gather every rank's "
                             "experts into one state dict first (distributed.full_state_dict)")
        out[f"layers.{layer}.moe.experts.{weight}"] = torch.stack([per_expert[e] for e in sorted(per_expert)])
    return out
# --8<-- [end:to_torchtitan]


def from_torchtitan(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """torchtitan's DeepSeek-V3 state dict in our names: the inverse of ``to_torchtitan``.

    Names are translated by the prefix table above; a key no prefix matches raises KeyError. The
    buffers torchtitan may keep (``tokens_per_expert``, ``freqs_cis``) are skipped. Load the result with
    ``load_state_dict`` (strict) to catch a parameter torchtitan has and we do not.
    """
    top_level = {theirs: ours for ours, theirs in _TOP_LEVEL}
    prefixes = [(theirs, ours) for ours, theirs in _LAYER_PREFIXES]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        grouped = _GROUPED.fullmatch(key)
        if grouped:
            if tensor.size(0) != config.n_routed_experts:
                raise ValueError(f"{key}: {tensor.size(0)} experts stacked, the config has {config.n_routed_experts}")
            for expert, weight in enumerate(tensor.unbind(0)):
                out[f"layers.{grouped[1]}.ffn.experts.{expert}.{grouped[2]}.weight"] = weight
        elif key.rpartition(".")[2] not in ("tokens_per_expert", "freqs_cis"):
            out[_rename(key, top_level, prefixes)] = tensor
    return out
