"""Chapter 06 reference solutions (graded by tests/exercises/test_06_loading.py)."""

import json
import struct

import torch

RENAMES = {
    "embed_tokens": "embed", "lm_head": "head", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm", "q_proj": "wq", "q_a_proj": "wq_a", "q_a_layernorm": "q_norm",
    "q_b_proj": "wq_b", "kv_a_proj_with_mqa": "wkv_a", "kv_a_layernorm": "kv_norm", "kv_b_proj": "wkv_b",
    "o_proj": "wo", "gate_proj": "w1", "down_proj": "w2", "up_proj": "w3",
}


def parse_safetensors_header(raw: bytes) -> dict[str, dict]:
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    header.pop("__metadata__", None)
    return header


def hub_to_official(name: str) -> str:
    name = name.removeprefix("model.")
    for old, new in [("self_attn", "attn"), ("mlp", "ffn"), ("weight_scale_inv", "scale"),
                     ("e_score_correction_bias", "bias")]:
        name = name.replace(old, new)
    parts = name.split(".")
    return ".".join(RENAMES.get(part, part) for part in parts)


def dequantize_fp8(q: torch.Tensor, scale_inv: torch.Tensor, block: int = 128) -> torch.Tensor:
    rows, cols = q.shape
    scales = scale_inv.repeat_interleave(block, dim=0)[:rows].repeat_interleave(block, dim=1)[:, :cols]
    return q.float() * scales


def count_hub_tensors(config: dict) -> int:
    scales = 2 if config.get("quantization_config") else 1  # a projection is 1 tensor, or weight + scale
    projections = (1 if config.get("q_lora_rank") is None else 2) + 3  # q, kv_a, kv_b, o
    latent_norms = 1 if config.get("q_lora_rank") is None else 2
    attention = projections * scales + latent_norms
    mlp = 3 * scales
    router = 1 + (config.get("topk_method") == "noaux_tc")
    shared = mlp if config.get("n_shared_experts") else 0
    dense_layer = 2 + attention + mlp
    moe_layer = 2 + attention + router + config["n_routed_experts"] * mlp + shared
    mtp_layer = moe_layer + 6  # enorm, hnorm, eh_proj, shared_head.norm, embed_tokens, shared_head.head
    n_dense = config["first_k_dense_replace"]
    n_moe = config["num_hidden_layers"] - n_dense
    top = 2 + (not config.get("tie_word_embeddings", False))  # embed_tokens, norm, lm_head
    return top + n_dense * dense_layer + n_moe * moe_layer + config.get("num_nextn_predict_layers", 0) * mtp_layer
