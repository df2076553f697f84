"""Every bad input gets one line: `minideepseek CMD: message` on stderr, exit status 1, no traceback.

The table runs the command line in-process (``cli.main``); the cases that need a real process (a
closed pipe, Ctrl-C) run it as one.
"""

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from minideepseek import ModelConfig, Transformer, save_pretrained
from minideepseek.cli import main
from minideepseek.config import ConfigError
from minideepseek.data import train_tokenizer

HAS_CUDA = torch.cuda.is_available()


def run_cli(args, capsys):
    """(exit status, stderr lines) of ``minideepseek ARGS``, as the shell would see them."""
    status, message = 0, None
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:  # sys.exit("text") prints the text to stderr and exits with 1
        status, message = (1, exit_.code) if isinstance(exit_.code, str) else (exit_.code or 0, None)
    err = capsys.readouterr().err + (f"{message}\n" if message else "")
    return status, [line for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad config files, a small checkpoint with its tokenizer, and folders to refuse."""
    root = tmp_path_factory.mktemp("cli_errors")
    hub, official = ModelConfig.from_preset("tiny").to_hf_dict(), ModelConfig.from_preset("tiny").to_dict()
    configs = {
        "tie_str": {**hub, "tie_word_embeddings": "false"}, "ngroup0": {**hub, "n_group": 0, "topk_group": 0},
        "rope_list": {**hub, "rope_scaling": [1, 2]}, "scaling_str": {**hub, "routed_scaling_factor": "abc"},
        "beta_str": {**official, "beta_fast": "32"}, "nan_alpha": {**official, "balance_loss_alpha": float("nan")},
        "neg_beta": {**official, "beta_fast": -5, "beta_slow": -10},
    }
    for name, data in configs.items():
        (root / f"{name}.json").write_text(json.dumps(data))
    (root / "nonutf8.json").write_bytes(b'{"dim": "\xff\xfe"}')
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    os.mkfifo(root / "fifo.json")
    (root / "afile").write_text("a file\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine\n")
    (root / "bad_run").mkdir()
    (root / "bad_run" / "train_config.json").write_text('{"bogus": 1}')

    model = Transformer(ModelConfig.from_preset("tiny", n_layers=1))
    save_pretrained(model, root / "ck", progress=False)
    tokenizer = train_tokenizer(["def add(a, b):\n    return a + b\n"] * 20, 300)
    tokenizer.save(str(root / "ck" / "tokenizer.json"))
    save_pretrained(model, root / "no_tokenizer", progress=False)
    # a training run whose checkpoint holds NaN weights, as older versions could leave a diverged run
    (root / "nan_run" / "checkpoint-00000001").mkdir(parents=True)
    (root / "nan_run" / "config.json").write_text(json.dumps(model.config.to_dict()))
    tokenizer.save(str(root / "nan_run" / "tokenizer.json"))
    weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
    weights["norm.weight"][0] = float("nan")
    save_file(weights, root / "nan_run" / "checkpoint-00000001" / "model.safetensors")
    (root / "nan_run" / "checkpoint-00000001" / "state.json").write_text('{"step": 1}')
    # a checkpoint whose header gives two tensors the same bytes, one whose index leaves the folder
    save_pretrained(model, root / "overlap", progress=False)
    file = root / "overlap" / "model.safetensors"
    raw = file.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    same_size = sorted((entry["data_offsets"], name) for name, entry in header.items()
                       if name != "__metadata__" and entry["shape"] == header["model.norm.weight"]["shape"])
    header[same_size[1][1]]["data_offsets"] = same_size[0][0]  # the second norm now reads the first one's bytes
    encoded = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length:])
    save_pretrained(model, root / "traversal", shard_size="200KB", progress=False)
    index = json.loads((root / "traversal" / "model.safetensors.index.json").read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = "../../../../etc/passwd"
    (root / "traversal" / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


CASES = [
    # info: config files that are not configs
    (["info", "--config", "{root}"], "is not a regular file but a folder"),
    (["info", "--config", "{root}/missing.json"], "config file not found"),
    (["info", "--config", "{root}/nonutf8.json"], "is not UTF-8 text"),
    (["info", "--config", "{root}/deep.json"], "nested too deeply"),
    (["info", "--config", "{root}/fifo.json"], "is not a regular file"),
    (["info", "--config", "/dev/zero"], "is not a regular file"),
    (["info", "--config", ""], "is not a regular file"),
    (["info", "--config", "{root}/tie_str.json"], "tie_word_embeddings must be true or false"),
    (["info", "--config", "{root}/ngroup0.json"], "n_expert_groups must be a positive integer, got 0"),
    (["info", "--config", "{root}/rope_list.json"], "rope_scaling must be a JSON object"),
    (["info", "--config", "{root}/scaling_str.json"], "route_scale must be a finite number > 0, got 'abc'"),
    (["info", "--config", "{root}/beta_str.json"], "beta_fast must be a finite number > 0, got '32'"),
    (["info", "--config", "{root}/nan_alpha.json"], "balance_loss_alpha must be a finite number >= 0, got nan"),
    (["info", "--config", "{root}/neg_beta.json"], "beta_fast must be a finite number > 0, got -5"),
    # train: every value is checked before the corpus is read
    (["train", "--seed", "-1", "--out", "{root}/r"], "TrainConfig.seed must be an integer between 0 and"),
    (["train", "--seq-len", "1", "--out", "{root}/r"], "must exceed the MTP depth"),
    (["train", "--seq-len", "100000", "--out", "{root}/r"], "exceeds the model's max_seq_len"),
    (["train", "--lr", "nan", "--out", "{root}/r"], "TrainConfig.lr must be a finite number > 0, got nan"),
    (["train", "--lr", "inf", "--out", "{root}/r"], "TrainConfig.lr must be a finite number > 0, got inf"),
    (["train", "--lr", "-1", "--out", "{root}/r"], "TrainConfig.lr must be"),
    (["train", "--min-lr", "1", "--out", "{root}/r"], "TrainConfig.min_lr must be"),
    (["train", "--steps", "0", "--out", "{root}/r"], "TrainConfig.steps must be a positive integer"),
    (["train", "--batch-size", "0", "--out", "{root}/r"], "TrainConfig.batch_size must be a positive integer"),
    (["train", "--keep-checkpoints", "0", "--out", "{root}/r"], "keep_checkpoints must be a positive integer"),
    (["train", "--schedule-steps", "0", "--out", "{root}/r"], "schedule_steps must be a positive integer"),
    (["train", "--out", "{root}/afile"], "is a file, not a folder"),
    (["train", "--out", "{root}/foreign"], "already holds files this command did not write (notes.txt)"),
    (["train", "--data", "{root}/missing", "--out", "{root}/r"], "does not exist"),
    (["train", "--data", "{root}/afile", "--out", "{root}/r"], "is a file"),
    (["train", "--resume", "--out", "{root}/nothing"], "holds no run to resume"),
    (["train", "--resume", "--out", "{root}/bad_run"], "unknown keys ['bogus']"),
    # generate and chat: the model, the tokenizer and the sampling settings
    (["generate", "--run", "{root}/missing", "--prompt", "x"], "is not a folder"),
    (["generate", "--run", "{root}/afile", "--prompt", "x"], "is not a folder"),
    (["generate", "--run", "{root}/no_tokenizer", "--prompt", "x"], "no tokenizer at"),
    (["generate", "--run", "{root}/nan_run", "--prompt", "x", "--temperature", "0"], "1 tensor(s) hold NaN or inf: norm"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--tokenizer", "{root}/tie_str.json"],
     "is not a tokenizers tokenizer.json"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--temperature", "nan"], "temperature must be a finite"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--temperature", "inf"], "temperature must be a finite"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--top-p", "nan"], "top_p must be in (0, 1]"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--top-k", "0"], "top_k must be a positive integer"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--max-new-tokens", "-1"], "max_new_tokens must be"),
    (["generate", "--run", "{root}/ck", "--prompt", "x", "--seed", str(2**64)], "seed must be an integer between"),
    (["chat", "--run", "{root}/ck", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["chat", "--run", "{root}/ck", "--temperature", "nan"], "temperature must be a finite"),
    # verify and convert
    (["verify", "{root}/ck", "--limit", "0"], "--limit must be at least 1"),
    (["verify", "{root}/ck", "--config", "{root}"], "is not a regular file"),
    (["verify", "{root}/overlap"], "overlaps the tensor before it"),
    (["verify", "{root}/traversal"], "outside the checkpoint folder"),
    (["verify", "{root}/missing"], "checkpoint directory not found"),
    (["convert", "{root}/ck", "{root}/afile", "--to", "hf"], "is a file, not a folder"),
    (["convert", "{root}/ck", "{root}/foreign", "--to", "hf"], "already holds files"),
    (["convert", "{root}/ck", "{root}/out0", "--to", "official", "--world-size", "0"], "world_size"),
    (["convert", "{root}/ck", "{root}/out1", "--to", "official", "--world-size", "-1"], "world_size"),
    (["convert", "{root}/ck", "{root}/out2", "--to", "hf", "--shard-size", "abc"], "cannot read a size"),
    (["convert", "{root}/ck", "{root}/ck", "--to", "hf"], "different directory"),
    # grpo: the settings, before any training
    (["grpo", "--threads", "0", "--out", "{root}/g"], "R1Config.threads must be a positive integer"),
    (["grpo", "--seed", str(2**40), "--out", "{root}/g"], "R1Config.seed must be an integer between 0 and"),
    (["grpo", "--beta", "nan", "--out", "{root}/g"], "GRPOConfig.beta must be a finite number >= 0, got nan"),
    (["grpo", "--lr", "inf", "--out", "{root}/g"], "GRPOConfig.lr must be a finite number > 0, got inf"),
    (["grpo", "--carry-bug", "nan", "--out", "{root}/g"], "carry_bug must be a finite number"),
    (["grpo", "--digits", "4", "--out", "{root}/g"], "n_digits must be an integer between 1 and 3"),
    (["grpo", "--group-size", "1", "--out", "{root}/g"], "group_size must be an integer >= 2"),
    (["grpo", "--heldout", "0", "--out", "{root}/g"], "n_heldout must be between 1 and"),
    (["grpo", "--out", "{root}/afile"], "is a file, not a folder"),
    (["grpo", "--out", "{root}/foreign"], "already holds files this command did not write (notes.txt)"),
    # bench: sizes of 0, devices that do not exist
    (["bench", "moe", "--tokens", "0"], "--tokens must be an integer >= 1, got 0"),
    (["bench", "train", "--seq", "0"], "--seq must be an integer >= 1, got 0"),
    (["bench", "load", "--shrink", "0"], "--shrink must be an integer >= 1, got 0"),
    (["bench", "fp8", "--steps", "-1"], "--steps must be an integer >= 1, got -1"),
    (["bench", "generate", "--train-steps", "0"], "--train-steps must be an integer >= 1, got 0"),
]
if not HAS_CUDA:
    CASES += [(["train", "--device", "cuda", "--out", "{root}/r"], "torch.cuda.is_available() is False"),
              (["generate", "--run", "{root}/ck", "--prompt", "x", "--device", "cuda"], "torch.cuda.is_available")]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:3]).replace("{root}", "") for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_status_1(files, capsys, args, message):
    status, lines = run_cli([a.replace("{root}", str(files)) for a in args], capsys)
    assert status == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"minideepseek {args[0]}") and message in lines[0], lines[0]
    assert "Traceback" not in lines[0]


def test_a_directory_in_place_of_a_device_is_named(capsys):
    status, lines = run_cli(["bench", "moe", "--preset", "tiny", "--device", "banana"], capsys)
    assert status == 1 and len(lines) == 1 and "unknown device 'banana'" in lines[0]


def test_debug_shows_the_traceback(files):
    with pytest.raises(ConfigError, match="not a regular file"):
        main(["--debug", "info", "--config", str(files)])


def test_warnings_are_one_line_each(files, capsys):
    prompt = b"caf\xe9 \xff".decode("utf-8", errors="surrogateescape")  # as Python receives invalid argv bytes
    status, lines = run_cli(["generate", "--run", files / "ck", "--prompt", prompt, "--max-new-tokens", "2",
                             "--temperature", "0"], capsys)
    assert status == 0
    assert lines[0] == "minideepseek generate: warning: --prompt held 2 byte(s) that are not UTF-8, replaced by U+FFFD"
    assert lines[1].startswith("[") and len(lines) == 2  # the statistics line


def test_a_real_process_prints_one_line_and_exits_1(files):
    result = subprocess.run([sys.executable, "-m", "minideepseek", "info", "--config", str(files)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"minideepseek info: {files} is not a regular file but a folder"]


def test_a_closed_pipe_ends_quietly():
    process = subprocess.Popen([sys.executable, "-m", "minideepseek", "info", "--preset", "v3-671b"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # `minideepseek info | head -0`: the reader is gone before the first line
    stderr = process.stderr.read().decode()
    assert process.wait() == 141 and stderr == ""


def test_ctrl_c_in_chat_ends_quietly(files):
    process = subprocess.Popen([sys.executable, "-m", "minideepseek", "chat", "--run", str(files / "ck")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shown, began = b"", time.time()
    while b"you> " not in shown and time.time() - began < 120:
        if select.select([process.stdout], [], [], 1)[0]:
            shown += os.read(process.stdout.fileno(), 4096)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert b"Traceback" not in stderr and stderr.strip() == b""
