"""Faults and bad inputs: nothing lost, nothing silently wrong.

Training stops at the first NaN with its last good checkpoint intact and resumes on the same schedule;
writers refuse folders that are not theirs and write complete-or-absent; checkpoint files that would
not load are refused by `verify`; config fields are checked strictly (a JSON "false" is not false).
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file

from minideepseek import ModelConfig, Transformer, load_pretrained, save_pretrained
from minideepseek import train as training
from minideepseek.checkpoint import CheckpointError, convert_checkpoint, read_header, verify_checkpoint
from minideepseek.config import ConfigError
from minideepseek.data import DataError, load_corpus
from minideepseek.grpo import GRPOConfig, GRPOError
from minideepseek.optim import NonFiniteError, optimizer_step
from minideepseek.r1 import R1_FILES, R1Config, R1Error, run_r1
from minideepseek.runfolder import FolderError, lock_folder, read_json, read_jsonl
from minideepseek.train import TrainConfig, TrainError, latest_checkpoint, train_model

from .test_data import write_corpus

TINY = dict(dim=32, inter_dim=64, moe_inter_dim=16, n_layers=2, n_heads=2, q_lora_rank=16, kv_lora_rank=16,
            qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8, n_activated_experts=2,
            n_expert_groups=2, n_limited_groups=1)


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """The runs here test bookkeeping, not plots: drawing loss.png costs more than training these models."""
    monkeypatch.setattr(training, "write_training_plots", lambda run_dir: None)


def config(root, name, **changes):
    values = dict(data_dir=str(root / "corpus"), out_dir=str(root / name), model_overrides=TINY, vocab_size=300,
                  val_fraction=0.2, steps=4, batch_size=2, seq_len=16, warmup_steps=1, eval_interval=100,
                  eval_batches=1, log_interval=1, checkpoint_interval=2, sample_tokens=2, progress=False)
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 4-step run (checkpoints at 2 and 4, schedule of 4 steps)."""
    root = tmp_path_factory.mktemp("reliability")
    write_corpus(root / "corpus")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "write_training_plots", lambda run_dir: None)
        train_model(config(root, "base"))
    return root


def copy_of(base, name):
    shutil.copytree(base / "base", base / name)
    return base / name


def finite_checkpoints(run_dir):
    return {ck.name: all(torch.isfinite(t).all() for t in load_file(ck / "model.safetensors").values())
            for ck in sorted(run_dir.glob("checkpoint-*"))}


# ------------------------------------------------------------------------------------------ guard the numbers
def test_optimizer_step_refuses_a_nan_loss_or_gradient_before_any_weight_moves():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.tensor([[1.0, float("nan"), 0.0]])).sum().backward()
    with pytest.raises(NonFiniteError, match=r"gradient norm is nan at optimizer step 1"):
        optimizer_step(model, optimizer)
    loss = model(torch.ones(1, 3)).sum() + float("inf")
    with pytest.raises(NonFiniteError, match="the loss is inf"):
        optimizer_step(model, optimizer, grad_clip=None, loss=loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_nan_in_the_weights_stops_training_and_keeps_the_last_good_checkpoint(base, monkeypatch):
    run = copy_of(base, "nan_weight")
    original = training.train_step

    def poisoned(model, optimizer, batches, config, device, loss_fn=None):  # as an overflow would leave it
        metrics = original(model, optimizer, batches, config, device, loss_fn)
        if optimizer.state[next(iter(model.parameters()))]["step"] == 5:
            with torch.no_grad():
                model.norm.weight[0] = float("nan")  # the final norm: every logit becomes NaN
        return metrics

    monkeypatch.setattr(training, "train_step", poisoned)
    with pytest.raises(TrainError) as error:
        train_model(TrainConfig.from_run(run, steps=8), resume=True)
    message = str(error.value)
    assert "\n" not in message and "the loss is nan at optimizer step 6" in message
    assert "the last good checkpoint, checkpoint-00000004, is kept" in message
    assert finite_checkpoints(run) == {"checkpoint-00000002": True, "checkpoint-00000004": True}
    assert all(r.get("train_loss", 0) == r.get("train_loss", 0) for r in read_jsonl(run / "metrics.jsonl"))  # no NaN


def test_a_diverging_learning_rate_stops_with_one_line_and_no_bad_checkpoint(base):
    with pytest.raises(TrainError, match=r"training stopped: the (loss|gradient norm|weights after step \d+) (is|hold)"):
        train_model(config(base, "diverging", lr=1e6, min_lr=0.0, steps=30, checkpoint_interval=1))
    assert all(finite_checkpoints(base / "diverging").values())


def test_a_checkpoint_with_nan_weights_is_never_written(base):
    model = Transformer(ModelConfig.from_preset("tiny", **TINY))
    optimizer = torch.optim.AdamW(model.parameters())
    with torch.no_grad():
        model.norm.weight[0] = float("inf")
    with pytest.raises(NonFiniteError, match="norm.weight"):
        training.save_checkpoint(base / "never", model, optimizer, {"step": 1, "data_position": 0})
    assert not (base / "never").exists() or not list((base / "never").glob("checkpoint-*"))


def test_loading_reports_non_finite_weights(tmp_path):
    model = Transformer(ModelConfig.from_preset("tiny", n_layers=1))
    with torch.no_grad():
        model.norm.weight[3] = float("nan")
    save_pretrained(model, tmp_path / "ck", progress=False)
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) hold NaN or inf: norm.weight"):
        load_pretrained(tmp_path / "ck", progress=False)
    with pytest.raises(CheckpointError, match="norm.weight"):
        load_pretrained(tmp_path / "ck", progress=False, strict=True)


# ------------------------------------------------------------------------------------------ resume means continue
def test_resume_with_more_steps_continues_the_same_schedule(base):
    straight = train_model(config(base, "planned", steps=6, schedule_steps=6))
    first = config(base, "chunked", steps=3, schedule_steps=6)
    train_model(first)
    train_model(TrainConfig.from_run(first.out_dir, steps=6), resume=True)
    a, b = read_jsonl(straight.run_dir / "metrics.jsonl"), read_jsonl(base / "chunked" / "metrics.jsonl")
    assert [r["lr"] for r in a if "lr" in r] == [r["lr"] for r in b if "lr" in r]  # one cosine over 6 steps
    assert [r["train_loss"] for r in a if "lr" in r] == pytest.approx([r["train_loss"] for r in b if "lr" in r], abs=1e-6)

    # past the planned schedule the rate stays at min_lr; the new target is recorded for the next --resume
    extended = copy_of(base, "extended")
    train_model(TrainConfig.from_run(extended, steps=6), resume=True)
    lrs = {r["step"]: r["lr"] for r in read_jsonl(extended / "metrics.jsonl") if "lr" in r}
    saved = json.loads((extended / "train_config.json").read_text())
    assert lrs[5] == lrs[6] == pytest.approx(saved["min_lr"]) and lrs[4] > saved["min_lr"]
    assert saved["steps"] == 6 and saved["schedule_steps"] == 4
    with pytest.raises(TrainError, match="already at step 6 of 6"):
        train_model(TrainConfig.from_run(extended), resume=True)
    with pytest.raises(TrainError, match="schedule_steps cannot change when resuming"):
        TrainConfig.from_run(extended, schedule_steps=10)


def test_resume_removes_what_a_killed_save_left(base):
    run = copy_of(base, "leftovers")
    (run / ".tmp-checkpoint-00000006-99999").mkdir()
    (run / ".tmp-checkpoint-00000006-99999" / "model.safetensors").write_bytes(b"x" * 1000)
    train_model(TrainConfig.from_run(run, steps=5), resume=True)
    assert not list(run.glob(".tmp-*"))
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-00000004", "checkpoint-00000005"]


def test_ctrl_c_finishes_the_step_and_saves_a_checkpoint(base, monkeypatch):
    run_config = config(base, "interrupted", steps=50, checkpoint_interval=100)
    original, handler = training.train_step, signal.getsignal(signal.SIGINT)

    def step_then_ctrl_c(model, optimizer, batches, config, device, loss_fn=None):
        metrics = original(model, optimizer, batches, config, device, loss_fn)
        if optimizer.state[next(iter(model.parameters()))]["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-loop; the step in flight is finished first
        return metrics

    monkeypatch.setattr(training, "train_step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_model(run_config)
    assert latest_checkpoint(run_config.out_dir).name == "checkpoint-00000003"
    assert signal.getsignal(signal.SIGINT) is handler  # restored


# ------------------------------------------------------------------------------------------ folders
def test_a_new_run_refuses_a_folder_that_is_not_a_run(base):
    victim = base / "victim"
    victim.mkdir()
    (victim / "config.json").write_text('{"mine": true}')
    (victim / "model-00001-of-00002.safetensors").write_bytes(b"weights")
    with pytest.raises(FolderError, match=r"already holds files .*model-00001-of-00002.safetensors.*--overwrite"):
        train_model(config(base, "victim"))
    assert (victim / "config.json").read_text() == '{"mine": true}' and not (victim / ".lock").exists()
    with pytest.raises(FolderError, match="is a file"):
        train_model(config(base, "victim/config.json"))

    train_model(config(base, "victim", steps=2), overwrite=True)  # asked for: the run writes among the files
    assert (victim / "model-00001-of-00002.safetensors").read_bytes() == b"weights"
    assert latest_checkpoint(victim).name == "checkpoint-00000002"


def test_a_second_run_in_the_same_folder_is_locked_out(base):
    run = copy_of(base, "locked")
    with lock_folder(run):
        with pytest.raises(FolderError, match=r"in use by another minideepseek process \(pid \d+\)"):
            train_model(TrainConfig.from_run(run, steps=5), resume=True)
    train_model(TrainConfig.from_run(run, steps=5), resume=True)  # free again


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        save_pretrained(Transformer(ModelConfig.from_preset("tiny", n_layers=2)), root / name, shard_size="200KB",
                        progress=False)
    return root


def same_files(folder, reference):
    return sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir()) and all(
        (folder / p.name).read_bytes() == p.read_bytes() for p in reference.iterdir())


def test_convert_refuses_a_folder_holding_another_checkpoint_unless_overwrite(two_models, tmp_path):
    target = tmp_path / "target"
    shutil.copytree(two_models / "a", target)
    (target / "README.md").write_text("my notes")
    with pytest.raises(FolderError, match=r"already holds files .*README.md.*--overwrite"):
        convert_checkpoint(two_models / "b", target, to="official", progress=False)
    assert (target / "README.md").read_text() == "my notes" and len(list(target.glob("model-*"))) > 3
    convert_checkpoint(two_models / "b", target, to="hf", progress=False, overwrite=True)  # replaces the folder
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]  # notes and shards gone
    b, converted = load_pretrained(two_models / "b", progress=False), load_pretrained(target, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), converted.parameters()))
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_convert_that_fails_midway_leaves_the_old_checkpoint(two_models, tmp_path, monkeypatch):
    import minideepseek.checkpoint as checkpoint

    target = tmp_path / "target"
    shutil.copytree(two_models / "a", target)
    original, written = checkpoint._write_safetensors, []

    def crash_after_two(*args, **kwargs):
        if len(written) == 2:
            raise OSError("No space left on device")
        original(*args, **kwargs)
        written.append(args[0])

    monkeypatch.setattr(checkpoint, "_write_safetensors", crash_after_two)
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(two_models / "b", target, to="hf", shard_size="200KB", progress=False, overwrite=True)
    assert same_files(target, two_models / "a") and not list(tmp_path.glob(".tmp-*"))


def test_a_killed_convert_leaves_the_old_checkpoint_or_the_new_one(two_models, tmp_path):
    """A real process death (no cleanup runs): SIGKILL right after the third shard file is written."""
    target = tmp_path / "target"
    shutil.copytree(two_models / "a", target)
    script = (
        "import os, signal, sys\nimport minideepseek.checkpoint as C\nwrite, n = C._write_safetensors, [0]\n"
        "def killed(*a, **k):\n    write(*a, **k); n[0] += 1\n"
        "    if n[0] == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "C._write_safetensors = killed\nfrom minideepseek.cli import main\n"
        f"main(['convert', {str(two_models / 'b')!r}, {str(target)!r}, '--to', 'hf', '--shard-size', '200KB',"
        " '--overwrite'])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL
    assert same_files(target, two_models / "a")
    assert verify_checkpoint(target).ok
    assert len(list(tmp_path.glob(".tmp-target-*"))) == 1  # what the killed process was building ...
    convert_checkpoint(two_models / "b", target, to="hf", shard_size="200KB", progress=False, overwrite=True)
    assert not list(tmp_path.glob(".tmp-*"))  # ... the next write of the same folder removes


# ------------------------------------------------------------------------------------------ checkpoint files
def test_index_paths_must_stay_inside_the_checkpoint_folder(two_models, tmp_path, monkeypatch):
    import minideepseek.checkpoint as checkpoint

    opened = []
    monkeypatch.setattr(checkpoint, "read_header", lambda file: opened.append(file) or {})
    index = json.loads((two_models / "a" / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"secret")
    for i, path in enumerate(["../outside.safetensors", str(outside), "sub/x.safetensors", "..", "."]):
        folder = tmp_path / f"ck{i}"
        shutil.copytree(two_models / "a", folder)
        weight_map = {**index["weight_map"], first: path}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
            verify_checkpoint(folder)
    assert opened == []  # refused before any file was opened


def write_raw(path, header, data):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


@pytest.mark.parametrize("offsets, message", [
    ([[0, 8], [4, 12]], "overlaps"),  # two tensors sharing bytes
    ([[-8, 0], [0, 8]], "data_offsets"),  # negative
    ([[0, 8], [12, 20]], "unused"),  # a gap
    ([[0, 8], [8, 16], [16, 24]], "belong to no tensor"),  # trailing bytes (the third entry is dropped below)
    ([[0, 8], [8, 40]], "needs 8 bytes"),  # size that is not dtype x shape
    ([[0, 8], [24, 32]], "truncated"),  # beyond the end
])
def test_read_header_refuses_what_safetensors_would_not_load(tmp_path, offsets, message):
    entries = {f"t{i}": {"dtype": "F32", "shape": [2], "data_offsets": o} for i, o in enumerate(offsets)}
    if message == "belong to no tensor":
        entries.pop("t2")
    file = tmp_path / "x.safetensors"
    write_raw(file, entries, bytes(24 if message in ("unused", "belong to no tensor") else 16))
    with pytest.raises(CheckpointError, match=message):
        read_header(file)


@pytest.mark.parametrize("entry, message", [
    ({"shape": [2], "data_offsets": [0, 8]}, "expected an object with dtype"),
    ("oops", "expected an object"),
    ({"dtype": "F4", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype"),
    ({"dtype": "F32", "shape": ["a", 2], "data_offsets": [0, 8]}, "list of integers"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "list of integers"),
])
def test_read_header_refuses_malformed_entries(tmp_path, entry, message):
    write_raw(tmp_path / "x.safetensors", {"t": entry}, bytes(8))
    with pytest.raises(CheckpointError, match=message):
        read_header(tmp_path / "x.safetensors")
    write_raw(tmp_path / "y.safetensors", [1, 2], bytes(8))
    with pytest.raises(CheckpointError, match="not an object"):
        read_header(tmp_path / "y.safetensors")


def test_what_verify_accepts_loads(two_models):
    ok = [f for f in (two_models / "a").glob("*.safetensors")]
    for file in ok:
        header = read_header(file)
        assert set(header) == set(load_file(file))


def test_convert_to_fp16_refuses_values_it_would_turn_into_inf(tmp_path):
    model = Transformer(ModelConfig.from_preset("tiny", n_layers=1))
    with torch.no_grad():
        model.norm.weight[:4] = 1e6
    save_pretrained(model, tmp_path / "big", progress=False)
    with pytest.raises(CheckpointError, match=r"norm.weight: values beyond the range of F16"):
        convert_checkpoint(tmp_path / "big", tmp_path / "fp16", to="hf", dtype=torch.float16, progress=False)
    assert not (tmp_path / "fp16").exists()


# ------------------------------------------------------------------------------------------ strict configs
HUB = ModelConfig.from_preset("tiny").to_hf_dict()


@pytest.mark.parametrize("change, message", [
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false"),
    ({"attention_bias": "false"}, "attention_bias must be true or false"),
    ({"norm_topk_prob": "true"}, "norm_topk_prob must be true or false"),
    ({"n_group": 0, "topk_group": 0}, r"n_expert_groups must be a positive integer, got 0 \(from the key n_group\)"),
    ({"hidden_size": "128"}, r"dim must be a positive integer, got '128' \(from the key hidden_size\)"),
    ({"hidden_size": 128.0}, "dim must be a positive integer"),
    ({"routed_scaling_factor": "abc"}, "route_scale must be a finite number > 0, got 'abc'"),
    ({"rms_norm_eps": float("inf")}, "norm_eps must be a finite number"),
    ({"rope_scaling": [1, 2]}, "rope_scaling must be a JSON object"),
    ({"rope_scaling": {"type": "yarn", "beta_fast": 32}}, "lacks its 'factor'"),
    ({"rope_scaling": {**HUB["rope_scaling"], "beta_fast": "x"}}, "beta_fast must be a finite number"),
    ({"quantization_config": "fp8"}, "not DeepSeek's FP8"),
    ({"topk_method": "magic"}, "topk_method must be"),
])
def test_hub_fields_are_read_strictly(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({**HUB, **change})


@pytest.mark.parametrize("field, value", [
    ("balance_loss_alpha", float("nan")), ("mtp_loss_weight", float("nan")), ("rope_theta", float("inf")),
    ("init_std", float("inf")), ("route_scale", float("inf")), ("beta_fast", "32"), ("beta_slow", -1),
    ("gate_bias", "false"), ("dim", True),
])
def test_model_config_refuses_nan_inf_and_wrong_types(field, value):
    with pytest.raises(ConfigError, match=f"ModelConfig.{field} must be"):
        ModelConfig.from_preset("tiny", **{field: value})


@pytest.mark.parametrize("changes, message", [
    ({"seed": -1}, "seed must be an integer between 0 and"),
    ({"seed": 2**64}, "seed must be an integer between 0 and"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"lr": 1e-4, "min_lr": 1e-3}, "min_lr must be a finite number >= 0 and <= 0.0001"),
    ({"seq_len": 1}, "must exceed the MTP depth"),
    ({"seq_len": 100_000}, "exceeds the model's max_seq_len"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be a positive integer"),
    ({"compile": "false"}, "compile must be true or false"),
    ({"betas": (0.9, float("nan"))}, "betas must be two numbers"),
])
def test_train_config_is_checked_before_any_work(changes, message):
    with pytest.raises(TrainError, match=message):
        TrainConfig(**changes)
    assert TrainConfig(lr=1e-4).min_lr == pytest.approx(1e-5)  # min_lr follows lr unless given


def test_a_damaged_train_config_json_is_named(base):
    run = copy_of(base, "damaged_config")
    values = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**values, "bogus": 1}))
    with pytest.raises(TrainError, match=r"train_config.json is not a TrainConfig: unknown keys \['bogus'\]"):
        TrainConfig.from_run(run)
    (run / "train_config.json").write_text(json.dumps({**values, "progress": "no"}))
    with pytest.raises(TrainError, match="progress must be true or false"):
        TrainConfig.from_run(run)


@pytest.mark.parametrize("changes, error, message", [
    ({"grpo": "not a config"}, R1Error, "grpo must be a GRPOConfig"),
    ({"threads": 0}, R1Error, "threads must be a positive integer"),
    ({"n_digits": 1, "n_heldout": 500}, ValueError, "n_heldout must be between 1 and 99"),
    ({"carry_bug": float("nan")}, ValueError, "carry_bug must be a finite number"),
])
def test_r1_config_is_checked_before_any_work(changes, error, message):
    with pytest.raises(error, match=message):
        R1Config(**changes)
    assert R1Config(n_digits=1).n_heldout == 20  # one digit: 100 problems, a fifth held out


@pytest.mark.parametrize("field, value", [("beta", float("nan")), ("lr", float("inf")), ("temperature", 0.0),
                                          ("epsilon_low", 1.0), ("grad_clip", float("nan"))])
def test_grpo_config_refuses_values_that_would_silently_change_the_objective(field, value):
    with pytest.raises(GRPOError, match=f"GRPOConfig.{field} must be"):
        GRPOConfig(**{field: value})


def test_a_failed_grpo_rerun_leaves_the_previous_run_as_it_was(tmp_path, monkeypatch):
    import minideepseek.r1 as r1

    run = tmp_path / "grpo"
    run.mkdir()
    for name in ("r1_config.json", "metrics.jsonl", "eval.json"):
        (run / name).write_text(f"previous {name}\n")
    (run / "sft_model").mkdir()
    (run / "sft_model" / "config.json").write_text("{}")

    def diverge(*args, **kwargs):
        raise NonFiniteError("the loss is nan at optimizer step 3")

    monkeypatch.setattr(r1, "train_grpo", diverge)
    config = R1Config(out_dir=str(run), sft_steps=2, sft_examples=8, sft_batch_size=4, n_heldout=10, progress=False,
                      control=False, distill=False)
    with pytest.raises(NonFiniteError):
        run_r1(config)
    assert sorted(p.name for p in run.iterdir()) == ["eval.json", "metrics.jsonl", "r1_config.json", "sft_model"]
    assert (run / "metrics.jsonl").read_text() == "previous metrics.jsonl\n"
    assert not list(tmp_path.glob(".tmp-*"))
    (run / "notes.txt").write_text("mine")
    with pytest.raises(FolderError, match="notes.txt"):
        run_r1(config)
    assert set(R1_FILES) >= {"metrics.jsonl", "eval.json", "sft_model"}


# ------------------------------------------------------------------------------------------ small input files
def test_read_json_reads_regular_small_utf8_files_only(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")  # opening it would block until a writer appears
    (tmp_path / "latin1.json").write_bytes(b'{"dim": "\xff\xfe"}')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "big.json").write_text(" " * 2000)
    for name, message in [("fifo.json", "not a regular file"), ("latin1.json", "not UTF-8 text"),
                          ("deep.json", "nested too deeply"), ("big.json", "2,000 bytes, more than the 1,000"),
                          ("missing.json", "does not exist"), (".", "but a folder")]:
        with pytest.raises(ValueError, match=message):
            read_json(tmp_path / name, max_bytes=1000 if name == "big.json" else 10**6)
    with pytest.raises(ConfigError, match="not a regular file"):
        ModelConfig.from_json("/dev/zero")


def test_damaged_corpus_files_are_named(base):
    run = copy_of(base, "corpus_damage")
    import numpy as np

    for array, message in [(np.random.rand(100), "float64 array"),
                           (np.full(100, 60000, dtype=np.uint16), "outside the tokenizer's"),
                           (np.array([{"a": 1}], dtype=object), "not a readable token array")]:
        np.save(run / "train.npy", array, allow_pickle=True)
        with pytest.raises(DataError, match=message):
            load_corpus(run)


def test_text_that_is_not_utf8_is_replaced_with_a_warning(tmp_path):
    from minideepseek.data import find_documents

    for i in range(2):
        (tmp_path / f"f{i}.txt").write_bytes("héllo wörld".encode("latin-1"))
    os.mkfifo(tmp_path / "pipe.txt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        documents = find_documents(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("2 file(s)" in m and "4 bytes replaced by U+FFFD" in m for m in messages)
    assert any("not regular files: pipe.txt" in m for m in messages)
    assert [d.text for d in documents] == ["h\ufffdllo w\ufffdrld"] * 2
