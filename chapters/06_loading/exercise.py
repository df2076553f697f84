"""Chapter 06 exercise: reading the published DeepSeek-V3 checkpoint, written as plain functions.

Fill in every function below, then grade your work with

    pytest tests/exercises/test_06_loading.py --student

The format is described in chapters/06_loading/lesson.md and docs/traps.md (9-11): safetensors
files, hub tensor names, FP8 weights with one float32 scale per 128 x 128 block.
"""

import torch


def parse_safetensors_header(raw: bytes) -> dict[str, dict]:
    """The tensor table at the start of a safetensors file, without touching the tensor data.

    raw: the first bytes of the file (at least the header). Layout: 8 bytes, the header length n as a
    little-endian unsigned 64-bit integer; then n bytes of UTF-8 JSON mapping each tensor name to
    {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, plus an optional
    "__metadata__" entry, which is not a tensor.
    Returns {name: {"dtype": str, "shape": list[int], "data_offsets": list[int]}} for every tensor.
    """
    raise NotImplementedError("parse_safetensors_header: struct.unpack('<Q', ...), then json.loads")


def hub_to_official(name: str) -> str:
    """A hub tensor name -> the official inference code's name (inference/convert.py's renaming).

    Drop the leading "model."; self_attn -> attn, mlp -> ffn, weight_scale_inv -> scale,
    e_score_correction_bias -> bias; then rename the module: embed_tokens -> embed, lm_head -> head,
    input_layernorm -> attn_norm, post_attention_layernorm -> ffn_norm, q_proj -> wq, q_a_proj -> wq_a,
    q_a_layernorm -> q_norm, q_b_proj -> wq_b, kv_a_proj_with_mqa -> wkv_a, kv_a_layernorm -> kv_norm,
    kv_b_proj -> wkv_b, o_proj -> wo, gate_proj -> w1, down_proj -> w2, up_proj -> w3 (gate, norm unchanged).
    Example: "model.layers.5.mlp.experts.7.gate_proj.weight_scale_inv" -> "layers.5.ffn.experts.7.w1.scale".
    """
    raise NotImplementedError("hub_to_official: strip, replace, rename the module part")


def dequantize_fp8(q: torch.Tensor, scale_inv: torch.Tensor, block: int = 128) -> torch.Tensor:
    """W[i, j] = float(Q[i, j]) * S[i // block, j // block]: the released weight, back in float32.

    q: (out, in) float8_e4m3fn; scale_inv: (ceil(out / block), ceil(in / block)) float32.
    The last block row/column may be narrower than `block` (576 rows = 4 x 128 + 64): it has its own scale.
    Returns (out, in) float32.
    """
    raise NotImplementedError("dequantize_fp8: expand each scale over its block, multiply")


def count_hub_tensors(config: dict) -> int:
    """How many tensors a hub checkpoint of this config.json holds (91,991 for DeepSeek-V3).

    config: a hub config.json as a dict (hidden keys you need: num_hidden_layers, first_k_dense_replace,
    n_routed_experts, n_shared_experts, q_lora_rank (null: one q_proj), topk_method ("noaux_tc": the
    router has an e_score_correction_bias), num_nextn_predict_layers, tie_word_embeddings,
    quantization_config (present: FP8, every projection has a weight_scale_inv)).
    Count: embedding, final norm, head (unless tied); per layer two norms, the attention (projections
    and its one or two latent norms), a dense MLP or an MoE (router weight [+ bias], routed experts,
    shared experts); each MTP layer is an MoE layer plus enorm, hnorm, eh_proj, shared_head.norm and its
    copies of the embedding and the head. The projections are q_proj or q_a_proj/q_b_proj,
    kv_a_proj_with_mqa, kv_b_proj, o_proj and the three of every MLP.
    """
    raise NotImplementedError("count_hub_tensors: count per dense layer, per MoE layer, per MTP layer")
