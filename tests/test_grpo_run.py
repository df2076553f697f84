"""End to end: cold-start SFT then GRPO on the addition task raises held-out accuracy.

The margins come from measured runs (see docs/benchmarks.md): the buggy teacher caps SFT near
60 % greedy accuracy, and GRPO passes 90 % within a few dozen steps. The suite runs on one thread
(tests/conftest.py), so a seed gives the same numbers on every run with the same torch.
"""

import json

import pytest

from minideepseek.cli import main
from minideepseek.grpo import GRPOConfig
from minideepseek.r1 import R1Config, run_r1
from minideepseek.runfolder import read_jsonl as read_metrics

STEP_KEYS = {"step", "reward", "accuracy", "format_rate", "kl", "clip_fraction", "completion_length",
             "frac_zero_std", "truncated", "grad_norm", "loss", "seconds"}



def test_a_short_run_lifts_heldout_accuracy_well_above_the_cold_start(tmp_path):
    config = R1Config(out_dir=str(tmp_path), n_heldout=1000, sft_steps=300, grpo=GRPOConfig(steps=15),
                      eval_interval=100, control=False, save_models=False, progress=False)
    results = run_r1(config)
    sft, grpo = results["sft"], results["grpo"]
    assert sft["format_rate"] >= 0.95  # the cold start taught the template
    assert sft["accuracy"] <= 0.8 and sft["carry_accuracy"] <= 0.6  # ... and the teacher's bug
    assert grpo["accuracy"] >= sft["accuracy"] + 0.15
    assert grpo["carry_accuracy"] >= sft["carry_accuracy"] + 0.3
    assert results["n_problems"] == 1000
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward" in r]
    assert [r["step"] for r in records] == list(range(1, 16))
    assert all(STEP_KEYS <= set(r) for r in records)
    assert all(r["kl"] >= 0 and 0 <= r["clip_fraction"] <= 1 for r in records)


def test_cli_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    main(["grpo", "--task", "arithmetic", "--preset", "tiny", "--steps", "2", "--sft-steps", "10", "--out", str(out)])
    assert "held-out greedy accuracy on 2000 unseen problems" in capsys.readouterr().out
    results = json.loads((out / "eval.json").read_text())
    assert {"sft", "grpo", "control", "n_problems", "seed", "seconds"} <= set(results)
    assert results["n_problems"] == 2000 and results["seed"] == 0
    assert results["seconds"]["control"] == pytest.approx(results["seconds"]["grpo"])
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "reward" in r]
    assert len(steps) == 2 and all(STEP_KEYS <= set(r) for r in steps)
    for name in ("training.png", "heldout.png", "sft_model/config.json", "grpo_model/config.json"):
        assert (out / name).is_file(), name


def test_bad_settings_exit_with_the_field_named(tmp_path):
    with pytest.raises(SystemExit, match="group_size"):
        main(["grpo", "--group-size", "1", "--out", str(tmp_path)])


@pytest.mark.slow
def test_default_run_beats_its_cold_start_by_25_points_and_the_control(tmp_path):
    results = run_r1(R1Config(out_dir=str(tmp_path), progress=False, save_models=False))
    assert results["grpo"]["accuracy"] >= results["sft"]["accuracy"] + 0.25
    assert results["grpo"]["accuracy"] >= 0.95
    assert results["grpo"]["accuracy"] >= results["control"]["accuracy"] + 0.25
