"""The ledger of the papers' claims (minideepseek/claims.py, chapters/13_ablations/claims.json).

The committed ledger must pass its own check; the recorded facts must be what the package computes
today; the site page must be the ledger's rendering; and the check must refuse an entry whose status,
command or result disagrees with the evidence.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minideepseek import claims as ledger
from minideepseek.claims import (
    DIRECTION_ONLY, NOT_AT_THIS_SCALE, NOT_YET_MEASURED, REPRODUCED, LedgerError, check_ledger, describe_test,
    holds, load_ledger, parse_claim,
)

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"info": {}, "bench": {"fp8": {}, "generate": {}}, "claims": {}}  # a small command tree for made-up ledgers


def raw_entries() -> list[dict]:
    return json.loads(ledger.LEDGER.read_text(encoding="utf-8"))["claims"]


def write_ledger(folder: Path, entries: list[dict]) -> Path:
    path = folder / "claims.json"
    path.write_text(json.dumps({"claims": entries}), encoding="utf-8")
    return path


def entry(**fields) -> dict:
    """A well-formed entry measured in RESULT.json, changed by ``fields``."""
    base = {"id": "made-up", "claim": "A claim.", "source": "A paper §1", "paper": "71x", "command": "minideepseek info",
            "result": {"file": "results/result.json", "key": "summary.ratio"}, "ours": "{value:.1f}x",
            "reproduces": {"op": "close", "value": 71.0, "rel": 0.01}, "direction": {"op": ">", "value": 1},
            "status": REPRODUCED, "note": "Why."}
    return {**base, **fields}


def problems_of(tmp_path: Path, entries: list[dict], value: float | None = 71.1) -> list[str]:
    if value is not None:
        (tmp_path / "results").mkdir(exist_ok=True)
        (tmp_path / "results" / "result.json").write_text(json.dumps({"summary": {"ratio": value, "name": "x"}}))
    checked = check_ledger(load_ledger(write_ledger(tmp_path, entries)), root=tmp_path, commands=COMMANDS)
    return [problem for c in checked for problem in c.problems]


# --------------------------------------------------------------------------- the committed ledger
def test_committed_ledger_passes_its_check():
    checked = check_ledger(load_ledger())
    assert len(checked) >= 20
    assert [f"{c.claim.id}: {p}" for c in checked for p in c.problems] == []
    counts = ledger.status_counts(checked)
    assert counts[REPRODUCED] and counts[NOT_AT_THIS_SCALE], counts  # the ledger says where the papers fail here too


def test_recorded_facts_are_what_the_package_computes():
    recorded = json.loads(ledger.FACTS.read_text(encoding="utf-8"))
    computed = json.loads(json.dumps(ledger.compute_facts()))  # JSON's types (tuples to lists, float keys)

    def compare(a, b, path="facts"):
        assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, f"{path}: {a!r} vs {b!r}"
        if isinstance(a, dict):
            assert a.keys() == b.keys(), f"{path}: keys differ; rerun `minideepseek claims --record-facts`"
            for key in a:
                compare(a[key], b[key], f"{path}.{key}")
        elif isinstance(a, float):
            assert a == pytest.approx(b, rel=1e-6), f"{path} is stale: rerun `minideepseek claims --record-facts`"
        else:
            assert a == b, f"{path} is stale: rerun `minideepseek claims --record-facts`"

    compare(recorded, computed)


def test_site_page_renders_the_ledger():
    expected = ledger.render_markdown(check_ledger(load_ledger()))
    page = ledger.PAGE.read_text(encoding="utf-8")
    assert page == expected, "docs/claims.md is stale: python -m minideepseek.claims --markdown docs/claims.md"
    for c in load_ledger():
        assert f"### {c.id}\n" in page


def test_command_line_prints_the_table_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "minideepseek.claims"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "v3-total-parameters" in result.stdout and "671,026,419,200" in result.stdout
    assert f"{len(raw_entries())} claims: " in result.stdout


# --------------------------------------------------------------------------- the check refuses what disagrees
def test_a_status_that_disagrees_with_the_recorded_value_fails(tmp_path, capsys):
    entries = raw_entries()
    mutated = copy.deepcopy(entries)
    target = next(e for e in mutated if e["status"] == REPRODUCED)
    target["status"] = NOT_AT_THIS_SCALE
    path = write_ledger(tmp_path, mutated)
    assert ledger.main(["--ledger", str(path)]) == 1
    errors = capsys.readouterr().err
    assert f"{target['id']}: status 'not reproducible at this scale' disagrees" in errors
    assert "it supports 'reproduced'" in errors and "1 of" in errors

    mutated = copy.deepcopy(entries)
    target = next(e for e in mutated if e["status"] == NOT_AT_THIS_SCALE)
    target["status"] = REPRODUCED  # claiming a win the recorded run does not show
    assert ledger.main(["--ledger", str(write_ledger(tmp_path, mutated))]) == 1
    assert f"{target['id']}: status 'reproduced' disagrees" in capsys.readouterr().err


@pytest.mark.parametrize("value,status", [(71.1, REPRODUCED), (40.0, DIRECTION_ONLY), (0.5, NOT_AT_THIS_SCALE)])
def test_each_status_needs_its_tests_to_hold(tmp_path, value, status):
    for claimed in (REPRODUCED, DIRECTION_ONLY, NOT_AT_THIS_SCALE):
        problems = problems_of(tmp_path, [entry(status=claimed)], value)
        assert (problems == []) == (claimed == status), (value, claimed, problems)
    # without a direction test, an effect that misses the paper's number is simply not reproduced
    no_direction = {k: v for k, v in entry(status=NOT_AT_THIS_SCALE).items() if k != "direction"}
    assert problems_of(tmp_path, [no_direction], 40.0) == []


def test_missing_commands_files_and_keys_fail(tmp_path):
    problems = problems_of(tmp_path, [entry(command="minideepseek nosuch --flag")])
    assert len(problems) == 1 and "has no subcommand 'nosuch'" in problems[0]
    assert "has no subcommand 'nosuch'" in problems_of(tmp_path, [entry(command="minideepseek bench nosuch")])[0]
    assert "needs a subcommand" in problems_of(tmp_path, [entry(command="minideepseek bench")])[0]
    assert "no such runnable module" in problems_of(tmp_path, [entry(command="python -m minideepseek.nosuch")])[0]
    assert "no such runnable module" in problems_of(tmp_path, [entry(command="python -m minideepseek.params")])[0]
    assert problems_of(tmp_path, [entry(command="python -m minideepseek.dsa_train --out x")]) == []
    assert problems_of(tmp_path, [entry(command="python -m minideepseek.plots 11")]) == []  # a package's __main__
    assert "starts with" in problems_of(tmp_path, [entry(command="make ablations")])[0]

    assert "does not exist" in problems_of(tmp_path, [entry(result={"file": "results/absent.json", "key": "a"})])[0]
    problem = problems_of(tmp_path, [entry(result={"file": "results/result.json", "key": "summary.ratoi"})])[0]
    assert "no 'summary.ratoi' (it has name, ratio)" in problem
    assert "not a number" in problems_of(tmp_path, [entry(result={"file": "results/result.json", "key": "summary.name"})])[0]


def test_not_yet_measured_until_the_file_holds_the_number(tmp_path):
    waiting = entry(status=NOT_YET_MEASURED, result={"file": "results/later.json", "key": "summary.ratio"})
    assert problems_of(tmp_path, [waiting], value=None) == []  # the study has not written its file yet
    assert problems_of(tmp_path, [entry(status=NOT_YET_MEASURED, result=None)], value=None) == []
    # once the file is there, the status must say what it shows, and a mistyped key is reported
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "later.json").write_text(json.dumps({"summary": {"ratio": 71.1}}))
    assert "it supports 'reproduced'" in problems_of(tmp_path, [waiting])[0]
    mistyped = entry(status=NOT_YET_MEASURED, result={"file": "results/later.json", "key": "summary.mla"})
    assert "no 'summary.mla'" in problems_of(tmp_path, [mistyped])[0]


def test_differences_and_ratios_of_two_recorded_numbers(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text(json.dumps({"summary": {"mha": {"bpb": 2.5}, "mla": {"bpb": 2.0}}}))
    (tmp_path / "results" / "b.json").write_text(json.dumps({"runs": [{"bpb": 4.0}]}))
    minus = entry(result={"file": "results/a.json", "key": "summary.mha.bpb", "minus": {"key": "summary.mla.bpb"}},
                  reproduces={"op": "close", "value": 0.5, "abs": 1e-12})
    ratio = entry(id="ratio", result={"file": "results/b.json", "key": "runs.0.bpb",
                                      "divided_by": {"file": "results/a.json", "key": "summary.mla.bpb"}},
                  reproduces={"op": "between", "low": 2, "high": 2})
    checked = check_ledger(load_ledger(write_ledger(tmp_path, [minus, ratio])), root=tmp_path, commands=COMMANDS)
    assert [c.value for c in checked] == [0.5, 2.0] and not [p for c in checked for p in c.problems]


# --------------------------------------------------------------------------- the form of an entry
@pytest.mark.parametrize("change,message", [
    ({"status": "sort of"}, "status must be one of"),
    ({"id": "Not A Slug"}, "lowercase slug"),
    ({"reproduces": {"op": "~", "value": 1}}, "an 'op' among"),
    ({"reproduces": {"op": "close", "value": 1}}, "needs a tolerance"),
    ({"reproduces": {"op": "between", "low": 1}}, "takes high, low"),
    ({"result": None}, "needs a recorded result"),
    ({"result": {"file": "/abs/result.json", "key": "a"}}, "relative to the repository"),
    ({"result": {"file": "results/result.csv", "key": "a"}}, "a JSON file"),
    ({"ours": "{val}"}, "format string"),
    ({"paper": ""}, "paper must be a non-empty string"),
    ({"extra": 1}, "unknown extra"),
])
def test_malformed_entries_are_refused(change, message):
    with pytest.raises(LedgerError, match=message):
        parse_claim(entry(**change), 0)
    missing = entry()
    del missing["note"]
    with pytest.raises(LedgerError, match="missing note"):
        parse_claim(missing, 0)


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(LedgerError, match="appears twice"):
        load_ledger(write_ledger(tmp_path, [entry(), entry()]))


def test_tests_and_their_descriptions():
    assert holds({"op": "close", "value": 71.0, "rel": 0.01}, 71.5) and not holds({"op": "close", "value": 71.0,
                                                                                   "rel": 0.001}, 71.5)
    assert holds({"op": "between", "low": 0.85, "high": 0.9}, 0.85) and not holds({"op": "between", "low": 0.85,
                                                                                  "high": 0.9}, 0.91)
    assert holds({"op": "<=", "value": 0}, 0) and not holds({"op": "<", "value": 0}, 0)
    assert holds({"op": ">", "value": 0}, 1e-9) and holds({"op": ">=", "value": 0}, 0) and not holds(None, 1.0)
    assert describe_test({"op": "close", "value": 71.11, "rel": 0.001}) == "value within 0.1 % of 71.11"
    assert describe_test({"op": "close", "value": 0, "abs": 1e-9}) == "value within ± 1e-09 of 0"
    assert describe_test({"op": "between", "low": 0.85, "high": 0.9}) == "0.85 <= value <= 0.9"
    assert describe_test({"op": ">=", "value": 685e9}) == "value >= 685,000,000,000"
