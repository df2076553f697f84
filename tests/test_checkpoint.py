"""Checkpoint layouts, verify, load/save/convert round trips and the errors a user can run into.

Parity with transformers is in test_checkpoint_transformers.py. The references here are the
published facts (tensor census of the R1 checkpoint, shapes from the hub, inference/convert.py's
names), the model's own parameter list, and files read back with the safetensors library.
"""

import dataclasses
import json
import math
import pickle
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minideepseek import CheckpointError, ConfigError, ModelConfig, Transformer, load_pretrained, save_pretrained
from minideepseek.checkpoint import convert_checkpoint, read_header, release_dtype, verify_checkpoint, write_skeleton
from minideepseek.checkpoint_names import hub_layout, hub_name, model_layout, official_layout
from minideepseek.cli import main as cli
from minideepseek.runfolder import FolderError
from tests.test_config import HUB_671B as PUBLISHED_CONFIG  # the hub config.json of DeepSeek-V3, verbatim


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.from_preset("tiny", **{"n_layers": 2, "vocab_size": 300, **overrides})


def random_model(config: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(config).eval()
    for module in model.modules():
        if getattr(module, "bias", None) is not None:  # the router's correction bias
            module.bias.data.normal_(0, 0.3)
    return model


def logits(model: Transformer) -> torch.Tensor:
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(tokens)


def state(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors


# ------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("overrides", [
    {}, {"q_lora_rank": 0}, {"tie_word_embeddings": True, "n_mtp_layers": 0},
    {"score_func": "softmax", "gate_bias": False, "n_expert_groups": 1, "n_limited_groups": 1, "n_mtp_layers": 2},
])
def test_model_layout_is_the_models_parameter_list(overrides):
    config = tiny(**overrides)
    with torch.device("meta"):
        model = Transformer(config)
    parameters = {name: tuple(p.shape) for name, p in model.named_parameters()}  # tied head listed once
    assert {name: spec.shape for name, spec in model_layout(config).items()} == parameters


def test_hub_names_follow_the_published_keys():
    n_layers = 61
    assert hub_name("embed.weight", n_layers) == "model.embed_tokens.weight"
    assert hub_name("head.weight", n_layers) == "lm_head.weight"
    assert hub_name("layers.0.attn.wkv_a.weight", n_layers) == "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
    assert hub_name("layers.0.attn_norm.weight", n_layers) == "model.layers.0.input_layernorm.weight"
    assert hub_name("layers.5.ffn.experts.7.w1.weight", n_layers) == "model.layers.5.mlp.experts.7.gate_proj.weight"
    assert hub_name("layers.5.ffn.shared_experts.w2.weight", n_layers) == "model.layers.5.mlp.shared_experts.down_proj.weight"
    assert hub_name("layers.5.ffn.gate.bias", n_layers) == "model.layers.5.mlp.gate.e_score_correction_bias"
    assert hub_name("mtp.0.eh_proj.weight", n_layers) == "model.layers.61.eh_proj.weight"
    assert hub_name("mtp.0.norm.weight", n_layers) == "model.layers.61.shared_head.norm.weight"
    assert hub_name("mtp.0.block.attn.wq_b.weight", n_layers) == "model.layers.61.self_attn.q_b_proj.weight"


def test_671b_layout_matches_the_published_census():
    """R1CENSUS: 91,991 tensors, 684,531,386,000 elements; shapes of the hub's FP8 tensors (the published model.safetensors.index.json)."""
    config = ModelConfig.from_dict(PUBLISHED_CONFIG)
    layout = hub_layout(config, fp8=True)
    assert len(layout) == 91_991
    assert sum(math.prod(spec.shape) for spec in layout.values()) == 684_531_386_000
    expected = {
        "model.layers.0.self_attn.q_a_proj.weight_scale_inv": (12, 56),
        "model.layers.0.self_attn.q_b_proj.weight_scale_inv": (192, 12),
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv": (5, 56),  # 576 rows: 4 blocks and a half
        "model.layers.0.self_attn.kv_b_proj.weight_scale_inv": (256, 4),
        "model.layers.0.self_attn.o_proj.weight_scale_inv": (56, 128),
        "model.layers.0.mlp.down_proj.weight_scale_inv": (56, 144),
        "model.layers.3.mlp.experts.255.gate_proj.weight_scale_inv": (16, 56),
        "model.layers.61.mlp.gate.e_score_correction_bias": (256,),
        "model.layers.61.eh_proj.weight": (7168, 14336),
        "model.layers.61.shared_head.head.weight": (129280, 7168),
    }
    assert {name: layout[name].shape for name in expected} == expected
    assert "model.layers.61.embed_tokens.weight" in layout and "model.layers.62.enorm.weight" not in layout


def test_official_layout_deals_out_experts_and_splits_like_convert_py():
    config = tiny(n_routed_experts=16)
    ranks = official_layout(config, world_size=4, fp8=False)
    assert "layers.1.ffn.experts.5.w1.weight" in ranks[1] and "layers.1.ffn.experts.5.w1.weight" not in ranks[0]
    assert ranks[2]["embed.weight"].shape == (300 // 4, 128)
    assert ranks[0]["layers.0.attn.wo.weight"].shape == (128, 4 * 32 // 4)  # wo splits its input
    assert ranks[3]["layers.0.attn.wkv_a.weight"].shape == (32 + 16, 128)  # repeated whole
    assert not any(name.startswith("mtp") for rank in ranks for name in rank)
    with pytest.raises(ValueError, match="cut FP8 scale blocks"):
        official_layout(config, world_size=2, fp8=True)


# ------------------------------------------------------------------------------------------- verify
def test_verify_671b_headers_and_a_broken_copy(tmp_path):
    """The real layout, written as header-only (sparse) shards: all 91,991 tensors found; then one
    tensor removed and one reshaped, and verify names exactly those."""
    config = ModelConfig.from_dict(PUBLISHED_CONFIG)
    tensors = {name: (release_dtype(spec), spec.shape) for name, spec in hub_layout(config, fp8=True).items()}
    files = write_skeleton(tmp_path / "good", config, tensors)
    (tmp_path / "good" / "config.json").write_text(json.dumps(PUBLISHED_CONFIG))
    assert len(files) == 163 + 2  # 4.25 GB shards, as many as published, + index + config.json
    report = verify_checkpoint(tmp_path / "good")
    assert report.ok, report.summary()
    assert report.n_tensors == report.n_expected == 91_991
    assert report.n_bytes > 680e9

    del tensors["model.layers.61.shared_head.norm.weight"]
    tensors["model.layers.7.self_attn.kv_a_proj_with_mqa.weight_scale_inv"] = ("F32", (4, 56))  # 576 / 128 floored
    tensors["model.layers.3.mlp.gate.e_score_correction_bias"] = ("BF16", (256,))
    write_skeleton(tmp_path / "bad", config, tensors)
    report = verify_checkpoint(tmp_path / "bad")
    assert report.missing == ["model.layers.61.shared_head.norm.weight"]
    assert report.wrong_shape == [("model.layers.7.self_attn.kv_a_proj_with_mqa.weight_scale_inv", (5, 56), (4, 56))]
    assert report.wrong_dtype == [("model.layers.3.mlp.gate.e_score_correction_bias", "F32", "BF16")]
    assert not report.unexpected and not report.ok
    assert "1 missing: model.layers.61.shared_head.norm.weight" in report.summary()


def test_verify_cli_exit_codes(tmp_path, capsys):
    save_pretrained(random_model(tiny()), tmp_path / "ok", progress=False)
    cli(["verify", str(tmp_path / "ok")])
    assert "OK" in capsys.readouterr().out
    config = tiny()
    tensors = {name: ("F32", spec.shape) for name, spec in hub_layout(config, fp8=False).items()}
    tensors["model.layers.0.extra.weight"] = ("F32", (3,))
    write_skeleton(tmp_path / "extra", config, tensors)
    with pytest.raises(SystemExit) as exit_:
        cli(["verify", str(tmp_path / "extra")])
    assert exit_.value.code == 1
    assert "1 unexpected: model.layers.0.extra.weight" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("options", [
    {"format": "hf"}, {"format": "hf", "shard_size": "200KB"}, {"format": "official", "world_size": 2},
])
def test_save_load_round_trip_is_exact(options, tmp_path):
    config = tiny(n_mtp_layers=0) if options["format"] == "official" else tiny()
    model = random_model(config)
    save_pretrained(model, tmp_path, progress=False, **options)
    assert verify_checkpoint(tmp_path).ok
    loaded = load_pretrained(tmp_path, progress=False)
    # the official JSON holds ModelArgs fields only (its code rejects others), so init_std is not kept
    assert loaded.config == dataclasses.replace(model.config, init_std=loaded.config.init_std)
    original = dict(model.named_parameters())
    for name, p in loaded.named_parameters():
        assert torch.equal(p, original[name]), name
    assert loaded.layers[1].ffn.gate.bias.dtype == torch.float32
    assert torch.equal(logits(loaded), logits(model))


def test_shards_and_index(tmp_path):
    save_pretrained(random_model(tiny()), tmp_path, shard_size="200KB", progress=False)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"]) == set(state(tmp_path))
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state(tmp_path).values())
    with pytest.raises(FolderError, match="already holds files"):  # never over a checkpoint unasked
        save_pretrained(random_model(tiny()), tmp_path, progress=False)
    save_pretrained(random_model(tiny()), tmp_path, progress=False, overwrite=True)  # a later single-file save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no stale shard


def test_hub_export_has_the_mtp_layer_and_its_copies(tmp_path):
    model = random_model(tiny())
    save_pretrained(model, tmp_path, progress=False)
    tensors = state(tmp_path)
    assert torch.equal(tensors["model.layers.2.embed_tokens.weight"], model.embed.weight)
    assert torch.equal(tensors["model.layers.2.shared_head.head.weight"], model.head.weight)
    assert torch.equal(tensors["model.layers.2.shared_head.norm.weight"], model.mtp[0].norm.weight)
    assert torch.equal(tensors["model.layers.2.self_attn.q_a_proj.weight"], model.mtp[0].block.attn.wq_a.weight)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_nextn_predict_layers"] == 1 and config["num_hidden_layers"] == 2


def test_mtp_copy_that_differs_is_reported(tmp_path):
    save_pretrained(random_model(tiny()), tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # identical copies: nothing to report
        load_pretrained(tmp_path, progress=False)
    tensors = state(tmp_path)
    tensors["model.layers.2.shared_head.head.weight"][5, 7] += 1.0
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match=r"model.layers.2.shared_head.head.weight differs from lm_head.weight "
                                         r"\(max abs difference 1\)"):
        load_pretrained(tmp_path, progress=False)


def test_fp8_export_is_the_published_format(tmp_path):
    """FP8 export: float8_e4m3fn weights + float32 weight_scale_inv of [ceil(out/128), ceil(in/128)],
    embedding/head/norms/router/eh_proj unquantised; loading dequantises exactly Q * S block by block."""
    config = tiny(dim=160, inter_dim=200)  # partial 128-blocks everywhere
    model = random_model(config)
    save_pretrained(model, tmp_path, fp8=True, dtype=torch.bfloat16, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["weight_block_size"] == [128, 128]
    assert verify_checkpoint(tmp_path).ok
    tensors = state(tmp_path)
    q = tensors["model.layers.0.mlp.gate_proj.weight"]
    scale = tensors["model.layers.0.mlp.gate_proj.weight_scale_inv"]
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (2, 2)
    for plain in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
                  "model.layers.2.eh_proj.weight", "model.layers.0.input_layernorm.weight"):
        assert tensors[plain].dtype == torch.bfloat16, plain
    assert tensors["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32

    loaded = load_pretrained(tmp_path, progress=False)
    by_block = q.float().clone()
    for i in range(2):
        for j in range(2):
            by_block[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] *= scale[i, j]
    assert torch.equal(loaded.layers[0].ffn.w1.weight, by_block)
    error = (loaded.layers[0].ffn.w1.weight - model.layers[0].ffn.w1.weight).abs().max()
    assert 0 < error <= model.layers[0].ffn.w1.weight.abs().max() / 8  # e4m3: 3 mantissa bits


def test_official_fp8_slices_whole_scale_blocks(tmp_path):
    """Model-parallel FP8 files cut every split tensor and its scale at block boundaries: two ranks
    load to exactly the weights of the unsplit FP8 checkpoint."""
    config = tiny(dim=64, n_heads=16, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16, inter_dim=256,
                  moe_inter_dim=256, n_routed_experts=8, n_expert_groups=4, n_activated_experts=2, n_mtp_layers=0)
    model = random_model(config)
    save_pretrained(model, tmp_path / "hub", fp8=True, progress=False)
    save_pretrained(model, tmp_path / "mp2", format="official", world_size=2, fp8=True, progress=False)
    with safe_open(tmp_path / "mp2" / "model1-mp2.safetensors", framework="pt") as rank1:
        assert rank1.get_slice("layers.0.attn.wq_b.weight").get_shape() == [256, 64]  # rows 256..511
        assert rank1.get_slice("layers.0.attn.wq_b.scale").get_shape() == [2, 1]  # their 2 row blocks
    assert verify_checkpoint(tmp_path / "mp2").ok
    hub, official = load_pretrained(tmp_path / "hub", progress=False), load_pretrained(tmp_path / "mp2", progress=False)
    for (name, a), b in zip(hub.named_parameters(), official.parameters()):
        assert torch.equal(a, b), name


def test_convert_keeps_fp8_bytes_and_dequantizes_on_request(tmp_path):
    config = tiny(n_mtp_layers=0)
    save_pretrained(random_model(config), tmp_path / "hub", fp8=True, progress=False)
    convert_checkpoint(tmp_path / "hub", tmp_path / "official", to="official", progress=False)
    convert_checkpoint(tmp_path / "official", tmp_path / "back", to="hf", progress=False)
    original, back = state(tmp_path / "hub"), state(tmp_path / "back")
    assert original.keys() == back.keys()
    for name in original:
        assert original[name].dtype == back[name].dtype
        assert torch.equal(original[name].view(torch.uint8), back[name].view(torch.uint8)), name

    cli(["convert", str(tmp_path / "hub"), str(tmp_path / "bf16"), "--to", "hf", "--dequantize", "--dtype", "fp32"])
    plain = state(tmp_path / "bf16")
    assert not any(name.endswith("_scale_inv") for name in plain)
    name = "model.layers.1.mlp.experts.3.down_proj.weight"
    expected = original[name].float() * original[name + "_scale_inv"]  # one block: 128 x 64
    assert torch.equal(plain[name], expected)
    assert "quantization_config" not in json.loads((tmp_path / "bf16" / "config.json").read_text())


# ------------------------------------------------------------------------------------------- errors
@pytest.fixture
def saved(tmp_path) -> Path:
    save_pretrained(random_model(tiny()), tmp_path, progress=False)
    return tmp_path


def test_missing_and_unexpected_tensors_are_named(saved):
    tensors = state(saved)
    del tensors["model.layers.1.mlp.experts.3.up_proj.weight"]
    tensors["model.layers.1.mlp.experts.16.up_proj.weight"] = torch.zeros(64, 128)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_pretrained(saved, progress=False)
    assert "1 missing: model.layers.1.mlp.experts.3.up_proj.weight" in str(error.value)
    assert "1 unexpected: model.layers.1.mlp.experts.16.up_proj.weight" in str(error.value)


def test_shape_mismatch_gives_expected_and_found(saved):
    tensors = state(saved)
    tensors["model.layers.0.self_attn.kv_b_proj.weight"] = torch.zeros(4 * 64, 31)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.layers.0.self_attn.kv_b_proj.weight: \(256, 32\) vs \(256, 31\)"):
        load_pretrained(saved, progress=False)


@pytest.mark.parametrize("removed, message", [
    ("model.layers.0.self_attn.o_proj.weight",  # a scale without its weight
     r"scale tensor model.layers.0.self_attn.o_proj.weight_scale_inv has "
     r"no weight model.layers.0.self_attn.o_proj.weight"),
    ("model.layers.1.mlp.shared_experts.up_proj.weight_scale_inv",  # an FP8 weight without its scale
     "1 missing: model.layers.1.mlp.shared_experts.up_proj.weight_scale_inv"),
])
def test_fp8_weight_and_scale_come_in_pairs(tmp_path, removed, message):
    save_pretrained(random_model(tiny()), tmp_path, fp8=True, progress=False)
    tensors = state(tmp_path)
    del tensors[removed]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(tmp_path, progress=False)


def test_not_a_deepseek_config(saved):
    (saved / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ConfigError, match="not a DeepSeek-V2/V3 config"):
        load_pretrained(saved, progress=False)


def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:  # unpickling this would write the marker file
        def __reduce__(self):
            return Path.write_text, (marker, "code ran")

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    (tmp_path / "config.json").write_text(json.dumps(tiny().to_hf_dict()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_pretrained(tmp_path, progress=False)
    assert not marker.exists()


def test_truncated_file(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(saved)


def test_header_is_read_without_the_data(saved):
    raw = (saved / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    infos = read_header(saved / "model.safetensors")
    assert {name: list(info.shape) for name, info in infos.items()} == {
        name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def test_missing_shard_and_missing_rank(tmp_path):
    save_pretrained(random_model(tiny()), tmp_path / "hub", shard_size="200KB", progress=False)
    second = sorted((tmp_path / "hub").glob("model-*-of-*.safetensors"))[1]
    second.unlink()
    with pytest.raises(CheckpointError, match=f"lists 1 shard file.*{second.name}"):
        load_pretrained(tmp_path / "hub", progress=False)
    save_pretrained(random_model(tiny(n_mtp_layers=0)), tmp_path / "official", format="official", world_size=4,
                    progress=False)
    (tmp_path / "official" / "model2-mp4.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks model2-mp4.safetensors"):
        load_pretrained(tmp_path / "official", progress=False)


def test_bench_load_runs_at_reduced_width(tmp_path):
    """`minideepseek bench load --shrink 32 --device cpu`: the 671B model's first 4 layers at 1/32 width."""
    from minideepseek.bench.load import measure, real_width_config, report
    from minideepseek.params import count_parameters

    results = measure(shrink=32, device="cpu", seq_len=8, directory=tmp_path)
    assert results["parameters"] == count_parameters(real_width_config(4, 32)).total
    assert results["file_gb"] > 0 and results["load_s"] > 0 and results["peak_gb"] > 0
    assert "load_pretrained" in report(results)
    assert not list(tmp_path.iterdir())  # the temporary checkpoint is gone
