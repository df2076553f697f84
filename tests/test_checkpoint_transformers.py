"""Parity with transformers' DeepseekV3: the same checkpoint files give the same logits.

Every case builds a small random ``DeepseekV3ForCausalLM`` with the features that make
DeepSeek-V3 hard to load right (YaRN, a non-zero correction bias, several expert groups, a
low-rank query, dense first layers), writes it in one of the published formats, loads it with
``load_pretrained`` and compares logits at every position in float32. The files in the FP8 and
official cases are written here, independently of ``minideepseek``, from the format description
(chapter 06, docs/traps.md 9-11): a naive block-by-block FP8 quantiser and a re-implementation of
``inference/convert.py``.
"""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minideepseek import ModelConfig, Transformer, load_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM  # noqa: E402

TOLERANCE = 1e-4  # max abs logit error allowed; the logits are O(1-10)
BLOCK = 128


def hf_values(**overrides) -> dict:
    """A small hub config: every V3 feature (YaRN, groups, the bias, a dense first layer) at width 64."""
    values = dict(
        vocab_size=320, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
        n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2, routed_scaling_factor=2.5,
        q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        max_position_embeddings=256, initializer_range=0.2, num_mtp_layers=0,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        # As in the published config.json (transformers' own config class has no such fields).
        scoring_func="sigmoid", topk_method="noaux_tc",
    )
    values.update(overrides)
    return values


def hf_config(**overrides) -> DeepseekV3Config:
    return DeepseekV3Config(**hf_values(**overrides))


def random_hf_model(config: DeepseekV3Config, seed: int = 0) -> DeepseekV3ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # large enough to change which experts are chosen
                buffer.copy_(torch.randn_like(buffer) * 0.3)
    return model


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def hf_model():
    return random_hf_model(hf_config())


@pytest.fixture(scope="module")
def hf_logits(hf_model, tokens):
    with torch.no_grad():
        return hf_model(tokens).logits


def logits_of(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


def logits_of_hf(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    error = (a - b).abs().max().item()
    print(f"max abs logit error {error:.3g} (logits up to {b.abs().max().item():.3g})")
    return error


def test_logits_are_not_trivially_small(hf_logits):
    """The tolerance means something only if the logits are large and spread out."""
    assert hf_logits.abs().max() > 3 and hf_logits.std() > 0.5


def test_logits_depend_on_the_rope_layout(hf_model, hf_logits, tokens, monkeypatch):
    """The inputs would expose the RoPE-layout trap (docs/traps.md, 1): half-split pairs change the logits."""
    monkeypatch.setattr(hf_model.config, "rope_interleave", False)
    assert (logits_of_hf(hf_model, tokens) - hf_logits).abs().max() > 0.1


def test_routing_depends_on_the_correction_bias_and_groups(hf_model, tokens):
    """The inputs exercise the bias and the group limit: without them other experts would be chosen."""
    router = hf_model.model.layers[1].mlp.gate
    hidden = hf_model.model.embed_tokens(tokens).view(-1, hf_model.config.hidden_size)
    scores = torch.sigmoid(hidden @ router.weight.T)
    with torch.no_grad():
        _, _, chosen = router(hidden)
    plain_topk = scores.topk(4, dim=-1).indices
    assert (chosen.sort(-1).values != plain_topk.sort(-1).values).any(dim=-1).float().mean() > 0.3


def test_hub_single_file(hf_model, hf_logits, tokens, tmp_path):
    hf_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    ours = load_pretrained(tmp_path, progress=False)
    assert max_error(logits_of(ours, tokens), hf_logits) < TOLERANCE


def test_hub_sharded(hf_model, hf_logits, tokens, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    ours = load_pretrained(tmp_path, progress=False)
    assert max_error(logits_of(ours, tokens), hf_logits) < TOLERANCE


# ------------------------------------------------------------------------------------------ FP8
def naive_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale per 128x128 block (partial blocks at the edges included): S = amax / 448, Q = W / S."""
    rows, cols = math.ceil(w.shape[0] / BLOCK), math.ceil(w.shape[1] / BLOCK)
    q = torch.empty(w.shape, dtype=torch.float8_e4m3fn)
    scale_inv = torch.empty(rows, cols)
    for i in range(rows):
        for j in range(cols):
            block = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK].float()
            scale_inv[i, j] = block.abs().max() / 448.0
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = (block / scale_inv[i, j]).to(torch.float8_e4m3fn)
    return q, scale_inv


def naive_dequantize(q: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    w = torch.empty(q.shape)
    for i in range(scale_inv.shape[0]):
        for j in range(scale_inv.shape[1]):
            w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = (
                q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK].float() * scale_inv[i, j])
    return w


QUANTISED = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
             "gate_proj", "up_proj", "down_proj")


def test_fp8_with_partial_blocks(tokens, tmp_path):
    """Every projection stored as float8_e4m3fn + weight_scale_inv, with widths that are not multiples of 128.

    hidden 160 = 128 + 32 columns, dense MLP 200 rows, o_proj 160 rows: every matrix has partial edge
    blocks. Reference: transformers with the weights dequantised block by block in this test.
    """
    config = hf_config(hidden_size=160, intermediate_size=200, moe_intermediate_size=40)
    hf_model = random_hf_model(config, seed=2)
    hf_model.save_pretrained(tmp_path / "float")
    with safe_open(tmp_path / "float" / "model.safetensors", framework="pt") as f:
        state = {name: f.get_tensor(name) for name in f.keys()}
    fp8_state, dequantised_state = {}, {}
    for name, tensor in state.items():
        if name.split(".")[-2] in QUANTISED:
            q, scale_inv = naive_quantize(tensor)
            fp8_state[name], fp8_state[name + "_scale_inv"] = q, scale_inv
            dequantised_state[name] = naive_dequantize(q, scale_inv)
        else:
            fp8_state[name] = dequantised_state[name] = tensor
    assert fp8_state["model.layers.0.mlp.gate_proj.weight_scale_inv"].shape == (2, 2)  # 200 x 160
    published = json.loads((tmp_path / "float" / "config.json").read_text())
    for directory, tensors, extra in (
        ("fp8", fp8_state, {"quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                                     "quant_method": "fp8", "weight_block_size": [128, 128]}}),
        ("dequantised", dequantised_state, {}),
    ):
        (tmp_path / directory).mkdir()
        save_file(tensors, tmp_path / directory / "model.safetensors", metadata={"format": "pt"})
        (tmp_path / directory / "config.json").write_text(json.dumps({**published, **extra}))

    reference = DeepseekV3ForCausalLM.from_pretrained(tmp_path / "dequantised").eval()
    ours = load_pretrained(tmp_path / "fp8", progress=False)
    assert ours.config.dtype == "fp8"
    error = max_error(logits_of(ours, tokens), logits_of_hf(reference, tokens))
    assert error < TOLERANCE
    # and the quantisation was real: the float model's logits are measurably different
    assert (logits_of_hf(hf_model, tokens) - logits_of_hf(reference, tokens)).abs().max() > 100 * TOLERANCE


# ------------------------------------------------------------------------------------ official
# inference/convert.py's table: hub component -> (official name, dimension split across ranks)
CONVERT_PY = {
    "embed_tokens": ("embed", 0), "input_layernorm": ("attn_norm", None), "post_attention_layernorm": ("ffn_norm", None),
    "q_proj": ("wq", 0), "q_a_proj": ("wq_a", None), "q_a_layernorm": ("q_norm", None), "q_b_proj": ("wq_b", 0),
    "kv_a_proj_with_mqa": ("wkv_a", None), "kv_a_layernorm": ("kv_norm", None), "kv_b_proj": ("wkv_b", 0),
    "o_proj": ("wo", 1), "gate": ("gate", None), "gate_proj": ("w1", 0), "down_proj": ("w2", 1),
    "up_proj": ("w3", 0), "norm": ("norm", None), "lm_head": ("head", 0),
}


def convert_py(state: dict[str, torch.Tensor], n_experts: int, mp: int,
               table: dict[str, tuple[str, int | None]] = CONVERT_PY) -> list[dict[str, torch.Tensor]]:
    """What inference/convert.py writes for each rank (its loop, re-typed from its source).

    ``table``: hub component -> (official name, split dimension), ``CONVERT_PY`` for V3."""
    ranks = [{} for _ in range(mp)]
    for name, param in state.items():
        name = name.removeprefix("model.").replace("self_attn", "attn").replace("mlp", "ffn")
        name = name.replace("weight_scale_inv", "scale").replace("e_score_correction_bias", "bias")
        key = name.split(".")[-2]
        new_key, dim = table[key]
        name = name.replace(key, new_key)
        for i in range(mp):
            if "experts" in name and "shared_experts" not in name:
                idx = int(name.split(".")[-3])
                if not i * n_experts // mp <= idx < (i + 1) * n_experts // mp:
                    continue
                ranks[i][name] = param
            elif dim is not None:
                ranks[i][name] = param.chunk(mp, dim)[i].contiguous()
            else:
                ranks[i][name] = param
    return ranks


def test_official_model_parallel_files(hf_model, hf_logits, tokens, tmp_path):
    hf_model.save_pretrained(tmp_path / "hub")
    with safe_open(tmp_path / "hub" / "model.safetensors", framework="pt") as f:
        state = {name: f.get_tensor(name) for name in f.keys()}
    for rank, tensors in enumerate(convert_py(state, n_experts=16, mp=2)):
        save_file(tensors, tmp_path / f"model{rank}-mp2.safetensors")
    c = hf_model.config
    official = {  # an official inference JSON (inference/configs/*.json style)
        "vocab_size": c.vocab_size, "dim": c.hidden_size, "inter_dim": c.intermediate_size,
        "moe_inter_dim": c.moe_intermediate_size, "n_layers": c.num_hidden_layers,
        "n_dense_layers": c.first_k_dense_replace, "n_heads": c.num_attention_heads,
        "n_routed_experts": c.n_routed_experts, "n_shared_experts": c.n_shared_experts,
        "n_activated_experts": c.num_experts_per_tok, "n_expert_groups": c.n_group,
        "n_limited_groups": c.topk_group, "route_scale": c.routed_scaling_factor, "score_func": "sigmoid",
        "q_lora_rank": c.q_lora_rank, "kv_lora_rank": c.kv_lora_rank, "qk_nope_head_dim": c.qk_nope_head_dim,
        "qk_rope_head_dim": c.qk_rope_head_dim, "v_head_dim": c.v_head_dim, "max_seq_len": 256,
        "original_seq_len": 64, "rope_factor": 4, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
    }
    (tmp_path / "config.json").write_text(json.dumps(official))
    ours = load_pretrained(tmp_path, progress=False)
    assert max_error(logits_of(ours, tokens), hf_logits) < TOLERANCE


# ------------------------------------------------------------------------------------ our export
def test_our_hub_export_loads_in_transformers(tokens, tmp_path):
    """ours -> save_pretrained(format="hf") -> DeepseekV3ForCausalLM.from_pretrained -> the same logits."""
    config = ModelConfig.from_preset("tiny", vocab_size=320, n_layers=3, n_mtp_layers=0, init_std=0.2)
    torch.manual_seed(3)
    model = Transformer(config).eval()
    for layer in model.layers[config.n_dense_layers:]:
        layer.ffn.gate.bias.data.normal_(0, 0.3)
    save_pretrained(model, tmp_path, progress=False)
    theirs = DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval()
    assert theirs.config.rope_parameters["rope_type"] == "yarn"
    assert max_error(logits_of_hf(theirs, tokens), logits_of(model, tokens)) < TOLERANCE


def test_mtp_layer_matches_transformers_mtp(tokens, tmp_path, monkeypatch):
    """Our MTP module, exported as hub layer n_layers, is the same function as transformers' MtpLayer.

    transformers 5.23 finds MTP weights through ``_keys_to_ignore_on_load_unexpected``, which it
    hard-codes to layer 61 (the 671B model); the test points it at this model's MTP layer.
    """
    from transformers.modeling_layers import MtpModel

    config = ModelConfig.from_preset("tiny", vocab_size=320, n_layers=2, init_std=0.2)
    torch.manual_seed(4)
    model = Transformer(config).eval()
    save_pretrained(model, tmp_path, progress=False)
    monkeypatch.setattr(DeepseekV3ForCausalLM, "_keys_to_ignore_on_load_unexpected",
                        [rf"model\.layers\.{config.n_layers}\..*"])
    theirs = DeepseekV3ForCausalLM.from_pretrained(tmp_path).eval()
    mtp = MtpModel.from_pretrained(theirs).eval()  # raises if an MTP weight is missing

    next_tokens = tokens.roll(-1, dims=1)
    positions = torch.arange(tokens.size(1))[None]
    with torch.no_grad():
        hidden = model.forward_hidden(tokens)
        module = model.mtp[0]
        ours = module.norm(module(hidden, model.embed(next_tokens), model.freqs_cis(tokens.size(1), hidden.device)))
        reference = mtp.forward_layer(0, hidden, positions, None, input_ids=next_tokens)
    assert max_error(ours, reference) < TOLERANCE
