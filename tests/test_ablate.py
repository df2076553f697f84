"""``minideepseek ablate``: the iso-FLOP budget, MaxVio, the paired summaries, and a micro study of each kind
(each run in its own process, results.json as documented, resumable)."""

import json
import math
import random

import pytest
import torch

from minideepseek import ModelConfig
from minideepseek.ablate import (STUDIES, AblationError, Settings, budget, max_violation, mean_std, run_study,
                                 specialisation, steps_for, summarise)
from minideepseek.cli import main
from minideepseek.params import training_flops_per_token

RUN_FIELDS = {"variant", "seed", "flops_per_token", "tokens", "val_loss", "val_bpb", "tokens_per_s", "wall_s",
              "kv_bytes_per_token", "peak_memory_bytes", "max_vio"}


def test_every_study_starts_with_v3s_choice_and_its_variants_build():
    v3 = ModelConfig.from_preset("tiny")
    for study in STUDIES.values():
        reference = study.model_config("tiny", study.reference)
        assert reference.attention == "mla" and reference.dense_ffn_dim == 0 and reference.gate_bias
        assert reference.score_func == v3.score_func
        assert len({v.slug for v in study.variants}) == len(study.variants)
        for variant in study.variants:
            study.model_config("tiny", variant)  # validates


def test_moe_study_holds_activated_and_total_expert_width_fixed():
    study = STUDIES["moe"]
    for variant in study.variants:
        c = study.model_config("tiny", variant)
        if c.dense_ffn_dim:
            assert c.dense_ffn_dim in (320, 1280)
            continue
        assert (c.n_shared_experts + c.n_activated_experts) * c.moe_inter_dim == 320
        assert (c.n_shared_experts + c.n_routed_experts) * c.moe_inter_dim == 1280


def test_iso_flop_budget_gives_each_variant_the_same_flops_within_one_step():
    settings = Settings(study="mtp", steps=200)
    total = budget(settings, 2048)
    reference = STUDIES["mtp"].model_config("tiny", STUDIES["mtp"].reference, vocab_size=2048)
    assert total == 200 * 8 * 128 * training_flops_per_token(reference, 128)
    for variant in STUDIES["mtp"].variants:
        config = STUDIES["mtp"].model_config("tiny", variant, vocab_size=2048)
        per_step = 8 * 128 * training_flops_per_token(config, 128)
        steps = steps_for(settings, config, total)
        assert abs(steps * per_step - total) <= per_step / 2
    assert steps_for(settings, reference, 1.0) == 1  # at least one step
    assert budget(Settings(study="gate", flops=3e12), 2048) == 3e12


def test_iso_tokens_trains_every_variant_for_the_same_steps():
    settings = Settings(study="mtp", steps=150, iso="tokens")
    for variant in STUDIES["mtp"].variants:
        assert steps_for(settings, STUDIES["mtp"].model_config("tiny", variant), budget(settings, 2048)) == 150
    with pytest.raises(AblationError, match="--steps"):
        Settings(study="mtp", flops=1e12, iso="tokens").validate()
    with pytest.raises(AblationError, match="--iso"):
        Settings(study="mtp", steps=5, iso="bytes").validate()


def test_max_violation_by_hand():
    loads = {"layer_1": torch.tensor([3, 1, 0, 0]), "layer_2": torch.tensor([2, 2, 2, 2])}
    assert max_violation(loads) == pytest.approx((3 / 1 - 1 + 0) / 2)
    assert max_violation({}) is None


def test_specialisation_is_zero_for_identical_domains_and_half_for_two_disjoint_ones():
    same = {"a": {"layer_1": [0.5, 0.5, 0, 0]}, "b": {"layer_1": [0.5, 0.5, 0, 0]}}
    disjoint = {"a": {"layer_1": [0.5, 0.5, 0, 0]}, "b": {"layer_1": [0, 0, 0.5, 0.5]}}
    assert specialisation(same) == 0
    assert specialisation(disjoint) == pytest.approx(0.5)


def test_summary_is_mean_and_sample_std_and_comparisons_are_paired_by_seed():
    rng = random.Random(0)
    runs = []
    for seed in range(3):
        for slug, shift in (("sigmoid", 0.0), ("softmax", 0.1)):
            runs.append({"variant": slug, "seed": seed, "val_bpb": 2.0 + seed + shift + rng.random() * 1e-3,
                         "val_loss": 1.0, "tokens_per_s": 100.0 * (1 + shift), "wall_s": 1.0, "flops_per_token": 1.0,
                         "tokens": 10, "kv_bytes_per_token": 1, "peak_memory_bytes": 1, "max_vio": None})
    summary, comparisons = summarise(STUDIES["gate"], runs)
    bpb = [r["val_bpb"] for r in runs if r["variant"] == "softmax"]
    mean = sum(bpb) / 3
    assert summary["softmax"]["val_bpb"]["mean"] == pytest.approx(mean)
    assert summary["softmax"]["val_bpb"]["std"] == pytest.approx(math.sqrt(sum((b - mean) ** 2 for b in bpb) / 2))
    assert "max_vio" not in summary["softmax"]  # None for every run: not summarised
    # The seeds move both variants by 0, 1, 2: unpaired, the spread would be ~1; paired it is the noise only.
    difference = comparisons["softmax_minus_sigmoid_val_bpb"]
    assert difference["mean"] == pytest.approx(0.1, abs=2e-3) and difference["std"] < 2e-3
    assert comparisons["softmax_over_sigmoid_tokens_per_s"]["mean"] == pytest.approx(1.1)
    assert mean_std([4.0]) == {"mean": 4.0, "std": 0.0, "n": 1, "sem": 0.0}
    assert mean_std([1.0, 2.0, 6.0])["sem"] == pytest.approx(math.sqrt(7) / math.sqrt(3))


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A small corpus in two packages (two domains), tokenized once for every micro study."""
    root = tmp_path_factory.mktemp("ablate")
    data = root / "data"
    rng = random.Random(0)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "else", "print", "None"]
    for package in ("alpha", "beta"):
        (data / package).mkdir(parents=True)
        for i in range(30):
            text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(40))
            (data / package / f"m{i}.py").write_text(f"# {package}\n{text}\n")
    return root, data


def micro(study: str, corpus_dir, **changes) -> Settings:
    root, data = corpus_dir
    return Settings(**{"study": study, "seeds": 1, "steps": 2, "data_dir": str(data), "corpus_dir": str(root / "corpus"),
                       "device": "cpu", "batch_size": 2, "seq_len": 32, "evals": 1, "eval_batches": 1, **changes})


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_micro_study_writes_results_as_documented(study, corpus_dir, tmp_path):
    out = tmp_path / study
    results = run_study(micro(study, corpus_dir), out, progress=False)
    written = json.loads((out / "results.json").read_text())
    assert written["study"] == study and written["command"]
    assert [r["variant"] for r in written["runs"]] == [v.slug for v in STUDIES[study].variants]
    for run in written["runs"]:
        assert RUN_FIELDS <= set(run)
        assert math.isfinite(run["val_bpb"]) and run["peak_memory_bytes"] > 0 and run["tokens_per_s"] > 0
        assert (run["max_vio"] is None) == (run["variant"].startswith("dense"))
        assert run["curve"][0]["flops"] == 0 and run["curve"][-1]["tokens"] == run["tokens"]
    assert set(written["summary"]) == {v.slug for v in STUDIES[study].variants}
    assert (out / "bpb.png").stat().st_size > 0 and "| variant |" in (out / "summary.md").read_text()
    if study == "mtp":
        rates = {r["variant"]: r.get("acceptance_rate") for r in written["runs"]}
        assert rates["mtp-0"] is None and 0 <= rates["mtp-1"] <= 1 and 0 <= rates["mtp-2"] <= 1
    if study == "balancing":
        run = written["runs"][0]
        assert run["domain_loads"] and set(run["domain_loads"]) <= {"alpha", "beta"}  # packages with validation files
        assert all(sum(shares) == pytest.approx(1) for layers in run["domain_loads"].values()
                   for shares in layers.values())
        assert (out / "expert_load_by_domain.png").is_file()
    assert results["summary"] == written["summary"]


def test_a_study_resumes_with_the_same_settings_only(corpus_dir, tmp_path):
    out = tmp_path / "gate"
    settings = micro("gate", corpus_dir)
    first = run_study(settings, out, progress=False)
    with pytest.raises(AblationError, match="--resume"):
        run_study(settings, out, progress=False)
    again = run_study(micro("gate", corpus_dir), out, resume=True, progress=False)  # nothing left to run
    assert again["runs"] == first["runs"]
    more = run_study(micro("gate", corpus_dir, seeds=2), out, resume=True, progress=False)  # a second seed added
    assert len(more["runs"]) == 4 and more["runs"][:2] == first["runs"]
    with pytest.raises(AblationError, match="other settings"):
        run_study(micro("gate", corpus_dir, lr=1e-3), out, resume=True, progress=False)


def test_seeded_runs_are_reproducible(corpus_dir, tmp_path):
    a = run_study(micro("gate", corpus_dir), tmp_path / "a", progress=False)["runs"]
    b = run_study(micro("gate", corpus_dir), tmp_path / "b", progress=False)["runs"]
    assert [r["val_bpb"] for r in a] == [r["val_bpb"] for r in b]


@pytest.mark.parametrize("flags,message", [
    (["--seeds", "0"], "--seeds"), (["--steps", "0"], "--steps"), (["--lr", "nan"], "--lr"),
    (["--steps", "5", "--flops", "1e9"], "not allowed"),
])
def test_bad_options_are_one_line_errors(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", "gate", "--out", str(tmp_path / "x"), *flags])
    assert message in str(exit_.value.code) + capsys.readouterr().err  # our message, or argparse's
    assert not (tmp_path / "x").exists()



@pytest.mark.parametrize("study", sorted(STUDIES))
def test_recorded_default_study_is_complete_and_its_table_is_in_the_lesson(study):
    from minideepseek.ablate import summary_table
    from minideepseek.plots.ablations import recorded, results_dir

    results = recorded(study)
    assert results["command"] == f"minideepseek ablate {study} --out chapters/13_ablations/results/{study}"
    request = results["settings"]["request"]
    assert request["seeds"] == 3 and request["steps"] == 200 and request["data_dir"] is None
    assert sorted((r["variant"], r["seed"]) for r in results["runs"]) == sorted(
        (v.slug, seed) for v in STUDIES[study].variants for seed in range(3))
    summary, comparisons = summarise(STUDIES[study], results["runs"])
    assert summary == results["summary"] and comparisons == results["comparisons"]
    lesson = (results_dir().parent / "lesson.md").read_text()
    assert summary_table(results) in lesson, f"lesson.md does not show the recorded {study} table"
