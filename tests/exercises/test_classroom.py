"""The classroom tools around the graders: hints, hand-outs, a class graded into a CSV.

Not exercise tests: skipped when grading a student (``--student``, ``--student-dir``, ``--mutants``).
"""

import ast
import csv
import re
import shutil
from pathlib import Path

import pytest

from minideepseek.cli import main
from minideepseek.grade import REPO_ROOT, Outcome, hint_for, hint_of_test
from minideepseek.handout import HandoutError, write_handout

HERE = Path(__file__).resolve().parent
TEST_FILES = sorted(HERE.glob("test_[0-9][0-9]_*.py"))


@pytest.mark.parametrize("tests", TEST_FILES, ids=[p.stem for p in TEST_FILES])
def test_every_exercise_test_has_a_hint_and_a_lesson_section(reference_only, tests):
    chapter = tests.stem.removeprefix("test_")
    lesson = (REPO_ROOT / "chapters" / chapter / "lesson.md").read_text()
    sections = set(re.findall(r"^## (.+?)\s*$", lesson, re.MULTILINE))
    assert "Exercise" in sections, f"chapters/{chapter}/lesson.md has no Exercise section"
    names = [node.name for node in ast.parse(tests.read_text()).body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    for name in names:
        found = hint_of_test(tests, name)
        assert found and found[0], f"{tests.name}::{name} has no docstring saying what it checks"
        text, section = found
        assert section in sections, f"{tests.name}::{name}: 'Reread: {section}' is not a section of the lesson"
        assert len(text) < 400, f"{tests.name}::{name}: the hint should be one or two sentences"


def test_hint_on_the_stubs_names_the_first_failing_test(reference_only, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["grade", "01", "--hint"])
    out = capsys.readouterr().out
    assert exited.value.code == 1
    assert "hint: test_matches_the_formula_in_float64 is the first test that does not pass" in out
    assert 'Reread: chapters/01_rmsnorm/lesson.md, section "The equations"' in out
    assert "def " not in out.split("hint:")[1]  # a sentence, not code


def test_hint_with_parameters_and_without_failures(reference_only):
    tests = HERE / "test_04_moe.py"
    text, section = hint_of_test(tests, "test_gate_route_matches_brute_force[-3.0]")
    assert "-inf" in text and section == "Pitfalls"
    assert hint_for(tests, [Outcome("test_swiglu_matches_the_formula_and_the_package", True, "PASS")]) is None
    message = hint_for(tests, [Outcome("test_swiglu_matches_the_formula_and_the_package", True, "PASS"),
                               Outcome("test_bias_update_sign_rule", False, "FAIL", "AssertionError")])
    assert "test_bias_update_sign_rule" in message and "SIGN" in message


def test_handout_then_grade_round_trip(reference_only, tmp_path, capsys):
    folder = tmp_path / "class" / "ada"
    main(["handout", str(folder), "--chapters", "01,10"])
    assert "minideepseek grade NN --student-dir" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["01_rmsnorm", "10_fp8", "README.md"]
    for chapter in ("01_rmsnorm", "10_fp8"):
        names = {p.name for p in (folder / chapter).iterdir()}
        assert {"exercise.py", "lesson.md", f"{chapter}.ipynb", "figures"} <= names
    assert not list(folder.rglob("solution*.py"))
    assert (folder / "01_rmsnorm" / "exercise.py").read_text() == (
        REPO_ROOT / "chapters" / "01_rmsnorm" / "exercise.py").read_text()
    with pytest.raises(HandoutError, match="already exist"):
        write_handout(folder, ["01"])  # never overwrites a student's work
    capsys.readouterr()

    # ada solves chapter 01; bob gets chapter 01 and does nothing. The whole class into one CSV.
    shutil.copy(REPO_ROOT / "chapters" / "01_rmsnorm" / "solution.py", folder / "01_rmsnorm" / "exercise.py")
    write_handout(tmp_path / "class" / "bob", ["01"])
    scores = tmp_path / "scores.csv"
    for student in sorted((tmp_path / "class").iterdir()):
        with pytest.raises(SystemExit):
            main(["grade", "--all", "--student-dir", str(student), "--csv", str(scores)])
    rows = list(csv.DictReader(scores.open()))
    table = {(r["student"], r["chapter"]): (int(r["passed"]), int(r["total"])) for r in rows}
    assert table[("ada", "01_rmsnorm")] == (5, 5)  # the solution copied in passes
    assert table[("ada", "10_fp8")] == (0, 10) and table[("bob", "01_rmsnorm")] == (0, 5)  # the stubs fail
    assert len(rows) == 3


def test_every_chapter_hands_out(reference_only, tmp_path):
    written = write_handout(tmp_path / "all")
    assert [p.name for p in written] == sorted(p.parent.name for p in (REPO_ROOT / "chapters").glob("*/exercise.py"))
    assert not list((tmp_path / "all").rglob("solution*.py"))
    with pytest.raises(HandoutError, match="no chapter"):
        write_handout(tmp_path / "none", ["99"])
