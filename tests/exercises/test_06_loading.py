"""Grades chapter 06 (loading the real model): chapters/06_loading/exercise.py or solution.py.

References: files written by the safetensors library, inference/convert.py's renaming written out
by hand, FP8 blocks dequantised one at a time in the test, the published tensor census of the
671B checkpoint (91,991), and the package's layout (tested against the model in tests/test_checkpoint.py).
"""

import copy

import torch
from safetensors.torch import save

from minideepseek import ModelConfig
from minideepseek.checkpoint_names import hub_layout, hub_name, model_layout

V3_HUB_CONFIG = {  # the fields of deepseek-ai/DeepSeek-V3's config.json that decide the layout
    "num_hidden_layers": 61, "first_k_dense_replace": 3, "n_routed_experts": 256, "n_shared_experts": 1,
    "q_lora_rank": 1536, "topk_method": "noaux_tc", "num_nextn_predict_layers": 1, "tie_word_embeddings": False,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
                            "activation_scheme": "dynamic"},
    "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_attention_heads": 128, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280,
    "max_position_embeddings": 163840, "scoring_func": "sigmoid", "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
}


def test_parse_safetensors_header(exercise):
    """The first 8 bytes are the header length as a LITTLE-endian unsigned 64-bit integer, then that many bytes
    of JSON; drop the __metadata__ entry, keep every tensor's dtype, shape and data_offsets.
    Reread: The code"""
    ex = exercise("06")
    tensors = {"model.embed_tokens.weight": torch.zeros(5, 3, dtype=torch.bfloat16),
               "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": torch.zeros(7, 3, dtype=torch.float8_e4m3fn),
               "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv": torch.zeros(1, 1)}
    raw = save(tensors, metadata={"format": "pt"})
    header = ex.parse_safetensors_header(raw)
    assert set(header) == set(tensors)
    assert header["model.embed_tokens.weight"]["dtype"] == "BF16"
    assert header["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]["shape"] == [7, 3]
    assert header["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]["dtype"] == "F8_E4M3"
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == 5 * 3 * 2 + 7 * 3 + 4  # the data follows, packed


def test_hub_to_official_by_hand(exercise):
    """Hub names lose the leading 'model.', self_attn/mlp become attn/ffn, weight_scale_inv becomes scale,
    e_score_correction_bias becomes bias, and each module part is renamed (q_a_proj -> wq_a, gate_proj -> w1,
    ...).
    Reread: The equations"""
    ex = exercise("06")
    examples = {
        "model.layers.5.mlp.experts.7.gate_proj.weight_scale_inv": "layers.5.ffn.experts.7.w1.scale",
        "model.embed_tokens.weight": "embed.weight",
        "lm_head.weight": "head.weight",
        "model.norm.weight": "norm.weight",
        "model.layers.0.input_layernorm.weight": "layers.0.attn_norm.weight",
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": "layers.0.attn.wkv_a.weight",
        "model.layers.0.self_attn.q_a_layernorm.weight": "layers.0.attn.q_norm.weight",
        "model.layers.3.mlp.gate.e_score_correction_bias": "layers.3.ffn.gate.bias",
        "model.layers.3.mlp.gate.weight": "layers.3.ffn.gate.weight",
        "model.layers.3.mlp.shared_experts.down_proj.weight": "layers.3.ffn.shared_experts.w2.weight",
    }
    assert {name: ex.hub_to_official(name) for name in examples} == examples


def test_hub_to_official_inverts_every_hub_name(exercise):
    """Every tensor name of a whole hub checkpoint (no query compression here: q_proj -> wq) must map back to
    the package's own name.
    Reread: The code"""
    ex = exercise("06")
    config = ModelConfig.from_preset("tiny", q_lora_rank=0, n_mtp_layers=0)
    for ours in model_layout(config):
        assert ex.hub_to_official(hub_name(ours, config.n_layers)) == ours


def test_dequantize_fp8_with_partial_blocks(exercise):
    """W[i, j] = float(Q[i, j]) * S[i // block, j // block], bit for bit, with narrower last blocks that keep
    their own scale; the scale multiplies.
    Reread: Pitfalls"""
    ex = exercise("06")
    torch.manual_seed(0)
    q = (torch.randn(300, 200) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)  # 3 x 2 blocks, partial edges
    scale_inv = torch.rand(3, 2) + 0.5
    expected = torch.empty(300, 200)
    for i, rows in enumerate([(0, 128), (128, 256), (256, 300)]):
        for j, cols in enumerate([(0, 128), (128, 200)]):
            expected[rows[0]:rows[1], cols[0]:cols[1]] = q[rows[0]:rows[1], cols[0]:cols[1]].float() * scale_inv[i, j]
    out = ex.dequantize_fp8(q, scale_inv)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)
    small = ex.dequantize_fp8(torch.tensor([[1.0, 2.0, 3.0]]).to(torch.float8_e4m3fn), torch.tensor([[2.0, 10.0]]), 2)
    assert small.tolist() == [[2.0, 4.0, 30.0]]


def test_count_hub_tensors(exercise):
    """Count per dense layer, per MoE layer (router weight, its bias only with noaux_tc, routed and shared
    experts) and per MTP layer (an MoE layer plus enorm, hnorm, eh_proj, shared_head.norm and its own embedding
    and head copies), a weight_scale_inv per FP8 projection: 91,991 for V3.
    Reread: Pitfalls"""
    ex = exercise("06")
    assert ex.count_hub_tensors(V3_HUB_CONFIG) == 91_991  # the published R1/V3 census
    variants = [{}, {"quantization_config": None}, {"q_lora_rank": None}, {"topk_method": "greedy",
                "scoring_func": "softmax", "norm_topk_prob": False, "n_group": 1, "topk_group": 1},
                {"num_nextn_predict_layers": 0, "tie_word_embeddings": True}, {"n_routed_experts": 32}]
    for change in variants:
        config = copy.deepcopy(V3_HUB_CONFIG)
        config.update(change)
        config.update(num_hidden_layers=5, first_k_dense_replace=2)
        if config["quantization_config"] is None:
            del config["quantization_config"]
        model_config = ModelConfig.from_dict(config)
        expected = len(hub_layout(model_config, fp8="quantization_config" in config))
        assert ex.count_hub_tensors(config) == expected, change
