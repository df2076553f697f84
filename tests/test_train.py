"""The trainer: schedule, optimizer groups, a short run's outputs, exact resume, atomic checkpoints, errors."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from minideepseek import ModelConfig, Transformer
from minideepseek import train as training
from minideepseek.cli import main as cli_main
from minideepseek.device import DeviceError, deterministic_kernels, resolve_device
from minideepseek.runfolder import read_jsonl as read_metrics
from minideepseek.train import (TrainConfig, TrainError, build_optimizer, latest_checkpoint, learning_rate,
                                load_checkpoint, load_trained, save_checkpoint, train_model)

from .test_data import write_corpus

SMALL_MODEL = dict(dim=64, inter_dim=128, moe_inter_dim=32, n_layers=3, n_heads=2, q_lora_rank=32, kv_lora_rank=16,
                   qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)



def small_run(tmp_path, name, **changes):
    values = dict(data_dir=str(tmp_path / "corpus"), out_dir=str(tmp_path / name), model_overrides=SMALL_MODEL,
                  vocab_size=320, val_fraction=0.2, steps=6, batch_size=4, seq_len=32, warmup_steps=2,
                  eval_interval=3, eval_batches=2, log_interval=1, checkpoint_interval=2, sample_tokens=12,
                  progress=False)
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 6-step run straight through (checkpoints at 2, 4, 6)."""
    tmp_path = tmp_path_factory.mktemp("train")
    write_corpus(tmp_path / "corpus")
    config = small_run(tmp_path, "straight")
    return tmp_path, config, train_model(config)


def test_learning_rate_warms_up_then_follows_a_cosine():
    lr = lambda s: learning_rate(s, max_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)  # noqa: E731
    assert [lr(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # halfway through the decay: (max + min) / 2
    assert lr(35) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    decay = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_weight_decay_only_on_matrices_and_gate_biases_outside_the_optimizer():
    model = Transformer(ModelConfig.from_preset("tiny", **SMALL_MODEL))
    optimizer = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    names = {p: n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert {names[p] for p in decayed["params"]} == {n for n, p in model.named_parameters() if p.dim() == 2
                                                       and not n.endswith("gate.bias")}
    assert {names[p] for p in plain["params"]} == {n for n, p in model.named_parameters() if n.endswith("norm.weight")}
    assert not any(n.endswith("gate.bias") for p in [*decayed["params"], *plain["params"]] for n in [names[p]])


def test_a_short_run_writes_metrics_plots_checkpoint_and_samples(straight):
    _, config, summary = straight
    run = summary.run_dir
    for name in ("config.json", "train_config.json", "tokenizer.json", "train.npy", "val.npy", "data.json",
                 "metrics.jsonl", "loss.png", "expert_load.png", "samples.txt"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-00000004", "checkpoint-00000006"]  # keep 2
    assert sorted(p.name for p in (run / "checkpoint-00000006").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    assert not list(run.glob(".tmp-*"))
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(7))
    assert [r["step"] for r in records if "val_loss" in r] == [0, 3, 6]
    assert records[0]["val_loss"] == pytest.approx(math.log(320), abs=0.3)  # an untrained model: uniform guess
    assert records[-1]["val_loss"] < records[0]["val_loss"] - 0.3
    for key in ("train_loss", "mtp_loss", "balance_loss", "lr", "tokens_per_s", "grad_norm",
                "layer_1/max_over_mean", "layer_3/max_over_mean", "load/max_over_mean"):
        assert key in records[-1], key
    assert records[1]["tokens"] == 4 * 32 and records[1]["lr"] == pytest.approx(config.lr / 2)

    text = (run / "samples.txt").read_text()
    assert len(summary.samples) == 3 and all(s in text for s in summary.samples)
    model_config = ModelConfig.from_json(run / "config.json")
    assert model_config.vocab_size == json.loads((run / "data.json").read_text())["vocab_size"]
    assert model_config.n_layers == 3 and model_config.dim == 64


def test_load_trained_returns_the_final_weights(straight):
    _, _, summary = straight
    model, tokenizer = load_trained(summary.run_dir)
    weights = load_file(str(summary.run_dir / "checkpoint-00000006" / "model.safetensors"))
    assert not model.training and tokenizer.get_vocab_size() == model.config.vocab_size
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert model.layers[1].ffn.gate.bias.abs().sum() > 0  # the balancing biases moved and were saved


def test_killed_and_resumed_run_continues_the_same_loss_trajectory(straight):
    tmp_path, _, reference = straight
    config = small_run(tmp_path, "resumed")
    train_model(config, stop_after=5)  # "killed" after step 5: its last checkpoint is step 4
    assert latest_checkpoint(config.out_dir).name == "checkpoint-00000004"
    summary = train_model(TrainConfig.from_run(config.out_dir), resume=True)

    straight_log = read_metrics(reference.run_dir / "metrics.jsonl")
    resumed_log = read_metrics(summary.run_dir / "metrics.jsonl")
    assert [r["step"] for r in resumed_log] == [r["step"] for r in straight_log]  # step 5 logged once
    for a, b in zip(straight_log, resumed_log):
        assert a.keys() == b.keys()
        for key in {"train_loss", "mtp_loss", "val_loss", "lr", "grad_norm", "load/max_over_mean"} & a.keys():
            assert a[key] == pytest.approx(b[key], abs=1e-6, rel=0), (a["step"], key)
    final_a = load_file(str(reference.run_dir / "checkpoint-00000006" / "model.safetensors"))
    final_b = load_file(str(summary.run_dir / "checkpoint-00000006" / "model.safetensors"))
    assert all(torch.allclose(final_a[k], final_b[k], rtol=0, atol=1e-6) for k in final_a)


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_intact(straight, monkeypatch):
    _, config, summary = straight
    run = summary.run_dir
    model, _ = load_trained(run)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    before = (run / "checkpoint-00000006" / "model.safetensors").read_bytes()

    def crash_midway(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(training, "save_file", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(run, model, optimizer, {"step": 8, "data_position": 0})
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-00000004", "checkpoint-00000006"]
    assert not list(run.glob(".tmp-*"))
    assert (run / "checkpoint-00000006" / "model.safetensors").read_bytes() == before
    assert load_checkpoint(latest_checkpoint(run), model)["step"] == 6


def test_resume_and_restart_mistakes_get_clear_errors(straight, tmp_path):
    corpus_parent, config, summary = straight
    with pytest.raises(TrainError, match="no checkpoint"):
        train_model(small_run(corpus_parent, "never_started"), resume=True)
    with pytest.raises(TrainError, match="already holds a run"):
        train_model(config)
    with pytest.raises(TrainError, match="already at step 6 of 6"):
        train_model(TrainConfig.from_run(summary.run_dir), resume=True)
    with pytest.raises(TrainError, match="batch_size cannot change when resuming"):
        TrainConfig.from_run(summary.run_dir, batch_size=8)
    with pytest.raises(TrainError, match="holds no run"):
        TrainConfig.from_run(tmp_path / "nothing")
    with pytest.raises(TrainError, match="holds no trained model"):
        load_trained(tmp_path)
    with pytest.raises(TrainError, match="seq_len must be a positive integer"):
        TrainConfig(seq_len=0)


def test_cpu_training_uses_deterministic_kernels_and_restores_the_setting():
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="torch.cuda.is_available"):
        resolve_device("cuda")


def test_mps_is_a_valid_device_and_a_clear_error_without_apple_silicon(tmp_path, monkeypatch):
    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert TrainConfig(device=name).device == name
    with pytest.raises(TrainError, match="'mps'"):  # the refusal lists mps among the choices
        TrainConfig(device="tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # any machine without MPS
    with pytest.raises(DeviceError, match=r"mps.*Apple Silicon.*use --device cpu"):
        resolve_device("mps")
    out = tmp_path / "run"  # the CLI accepts the flag, and the run stops before it writes anything
    with pytest.raises(SystemExit, match="use --device cpu"):
        cli_main(["train", "--device", "mps", "--steps", "2", "--out", str(out)])
    assert not out.exists()


def test_cli_train_reports_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit, match="data folder .*missing does not exist"):
        cli_main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no non-empty"):
        cli_main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="no run to resume|no checkpoint"):
        cli_main(["train", "--resume", "--out", str(tmp_path / "run")])


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_a_few_steps_on_cuda_in_bf16(tmp_path, compile):
    write_corpus(tmp_path / "corpus")
    summary = train_model(small_run(tmp_path, "cuda", device="cuda", steps=4, compile=compile))
    val = [loss for _, loss in summary.val_losses]
    assert val[-1] < val[0] and all(math.isfinite(v) for v in val)
