"""ModelConfig: both JSON forms of the 671B model, the hub round trip, and clear errors."""

import dataclasses
import json

import pytest

from minideepseek import ConfigError, ModelConfig
from minideepseek.rope import rope_frequencies, softmax_scale

# inference/configs/config_671B.json of deepseek-ai/DeepSeek-V3, verbatim.
OFFICIAL_671B = {
    "vocab_size": 129280, "dim": 7168, "inter_dim": 18432, "moe_inter_dim": 2048, "n_layers": 61,
    "n_dense_layers": 3, "n_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1,
    "n_activated_experts": 8, "n_expert_groups": 8, "n_limited_groups": 4, "route_scale": 2.5,
    "score_func": "sigmoid", "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "dtype": "fp8",
}

# The hub's deepseek-ai/DeepSeek-V3 config.json, verbatim (auto_map shortened to its keys).
HUB_671B = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                 "AutoModel": "modeling_deepseek.DeepseekV3Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu",
    "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": True,
    "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "tie_word_embeddings": False,
    "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.46.3",
    "use_cache": True, "v_head_dim": 128, "vocab_size": 129280,
}


def write_json(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_official_and_hub_json_describe_the_same_model(tmp_path):
    official = ModelConfig.from_json(write_json(tmp_path, "config_671B.json", OFFICIAL_671B))
    hub = ModelConfig.from_json(write_json(tmp_path, "config.json", HUB_671B))
    # Three fields the official inference JSON cannot express: its demo serves 16K positions (the hub
    # declares 163,840), its code has no MTP (the hub checkpoint has one layer), and it has no
    # initializer. Everything else, every architectural field, must agree exactly.
    aligned = dataclasses.replace(official, max_seq_len=hub.max_seq_len, n_mtp_layers=hub.n_mtp_layers,
                                  init_std=hub.init_std)
    assert aligned == hub
    assert (official.max_seq_len, hub.max_seq_len) == (16384, 163840)
    assert hub.n_mtp_layers == 1 and hub.gate_bias and official.gate_bias
    # Both serve past the original 4K, so the RoPE frequencies and softmax scale are identical.
    assert rope_frequencies(official).equal(rope_frequencies(hub))
    assert softmax_scale(official) == softmax_scale(hub) == pytest.approx(0.1352338, abs=1e-7)


def test_presets_match_the_official_json(tmp_path):
    official = ModelConfig.from_json(write_json(tmp_path, "c.json", OFFICIAL_671B))
    assert dataclasses.replace(official, n_mtp_layers=1) == ModelConfig.from_preset("v3-671b")
    config_16b = {"vocab_size": 102400, "dim": 2048, "inter_dim": 10944, "moe_inter_dim": 1408, "n_layers": 27,
                  "n_dense_layers": 1, "n_heads": 16, "n_routed_experts": 64, "n_shared_experts": 2,
                  "n_activated_experts": 6, "route_scale": 1.0, "q_lora_rank": 0, "kv_lora_rank": 512,
                  "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "mscale": 0.707}
    assert ModelConfig.from_json(write_json(tmp_path, "c16.json", config_16b)) == ModelConfig.from_preset("v2-lite-16b")


def test_hub_round_trip(tmp_path):
    for name in ["v3-671b", "tiny", "mini", "v2-236b"]:
        config = ModelConfig.from_preset(name)
        assert ModelConfig.from_dict(config.to_hf_dict()) == config
        assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_transformers_5_rope_parameters_form():
    data = dict(HUB_671B)
    rope = data.pop("rope_scaling")
    data["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "beta_fast": 32.0,
                               "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                               "original_max_position_embeddings": 4096}
    data.pop("rope_theta")
    assert ModelConfig.from_dict(data) == ModelConfig.from_dict({**HUB_671B, "rope_scaling": rope})


@pytest.mark.parametrize("overrides, field", [
    (dict(n_routed_experts=250), "n_expert_groups"),  # 250 experts in 8 groups
    (dict(n_activated_experts=9, n_limited_groups=1, n_routed_experts=64), "n_activated_experts"),
    (dict(score_func="relu"), "score_func"),
    (dict(dim=-1), "dim"),
    (dict(kv_lora_rank=0), "kv_lora_rank"),
    (dict(n_limited_groups=9), "n_limited_groups"),
    (dict(qk_rope_head_dim=63), "qk_rope_head_dim"),
    (dict(n_dense_layers=62), "n_dense_layers"),
    (dict(dtype="int4"), "dtype"),
])
def test_invalid_configs_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_preset("v3-671b", **overrides)


def test_json_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown config keys.*hidden_dim"):
        ModelConfig.from_json(write_json(tmp_path, "a.json", {**OFFICIAL_671B, "hidden_dim": 3}))
    with pytest.raises(ConfigError, match="unknown keys.*sliding_window"):
        ModelConfig.from_json(write_json(tmp_path, "b.json", {**HUB_671B, "sliding_window": 4096}))
    with pytest.raises(ConfigError, match="not a DeepSeek-V2/V3 config"):
        ModelConfig.from_json(write_json(tmp_path, "c.json", {**HUB_671B, "model_type": "llama"}))
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.from_json(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.from_preset("v4")
