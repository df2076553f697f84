"""``minideepseek grade``: PASS/FAIL per test and a score, for a student folder, the stubs or the reference."""

import shutil

import pytest

from minideepseek.cli import main
from minideepseek.grade import REPO_ROOT, GradeError, exercise_tests, read_junit, run_grading, score_table

CHAPTER = REPO_ROOT / "chapters" / "01_rmsnorm"


def test_student_folder_with_a_correct_solution_gets_full_marks(tmp_path, capsys):
    (tmp_path / "01_rmsnorm").mkdir()
    shutil.copy(CHAPTER / "solution.py", tmp_path / "01_rmsnorm" / "exercise.py")
    with pytest.raises(SystemExit) as exited:
        main(["grade", "01", "--student-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    passed = [line for line in out.splitlines() if line.strip().startswith("PASS")]
    assert len(passed) >= 3 and out.strip().endswith(f"score: {len(passed)}/{len(passed)}")
    assert "FAIL" not in out


def test_untouched_stub_scores_zero(tmp_path):
    shutil.copy(CHAPTER / "exercise.py", tmp_path / "01_rmsnorm.py")  # the flat layout: DIR/NN_slug.py
    outcomes = run_grading("1", student_dir=tmp_path)
    assert outcomes and not any(o.passed for o in outcomes)
    assert all("NotImplementedError" in o.reason for o in outcomes)
    assert score_table(outcomes).endswith(f"score: 0/{len(outcomes)}")


def test_a_partly_wrong_solution_gets_a_partial_score(tmp_path):
    # Forgetting eps passes the tests on ordinary inputs and fails the ones about eps.
    source = (CHAPTER / "solution.py").read_text().replace(" + eps)", ")")
    assert source != (CHAPTER / "solution.py").read_text()
    (tmp_path / "01_rmsnorm.py").write_text(source)
    outcomes = run_grading("01_rmsnorm", student_dir=tmp_path)
    passed = sum(o.passed for o in outcomes)
    assert 0 < passed < len(outcomes)
    assert {o.status for o in outcomes} == {"PASS", "FAIL"}


def test_unknown_chapter_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(GradeError, match="chapters with exercises"):
        exercise_tests("99")
    with pytest.raises(GradeError, match="no tests/exercises/ folder"):
        exercise_tests("01", root=tmp_path)
    with pytest.raises(GradeError, match="no such folder"):
        run_grading("01", student_dir=tmp_path / "nowhere")


def test_read_junit(tmp_path):
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" tests="3">'
        '<testcase classname="t" name="test_a"/>'
        '<testcase classname="t" name="test_b"><failure message="AssertionError: 1 != 2">trace</failure></testcase>'
        '<testcase classname="t" name="test_c"><error message="fixture failed">trace</error></testcase>'
        "</testsuite></testsuites>")
    outcomes = read_junit(report)
    assert [(o.test, o.status, o.passed) for o in outcomes] == [
        ("test_a", "PASS", True), ("test_b", "FAIL", False), ("test_c", "ERROR", False)]
    assert outcomes[1].reason == "AssertionError: 1 != 2"
