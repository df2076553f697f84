"""``minideepseek grade NN``: grade the exercise of chapter NN and print a score.

It runs the chapter's tests (``tests/exercises/test_NN_*.py`` of the repository) with
pytest in student mode, so it grades ``chapters/NN_slug/exercise.py``, or, with
``--student-dir DIR``, ``DIR/NN_slug/exercise.py`` (or ``DIR/NN_slug.py``). ``--reference``
grades the reference solutions instead (a teacher's check that the tests pass).
The tests live in the repository, not in the installed package: install with
``pip install -e .`` from a clone.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

REPO_ROOT = Path(__file__).resolve().parents[1]


class GradeError(RuntimeError):
    """The grader cannot run: no tests folder, no such chapter, or pytest did not report."""


@dataclass
class Outcome:
    test: str
    passed: bool
    status: str  # PASS, FAIL, ERROR or SKIP
    reason: str = ""


def exercise_tests(chapter: str, root: Path = REPO_ROOT) -> Path:
    """tests/exercises/test_NN_*.py for chapter "NN", "N" or "NN_slug"."""
    folder = root / "tests" / "exercises"
    if not folder.is_dir():
        raise GradeError(f"no tests/exercises/ folder at {folder}: grading needs the repository's tests, so "
                         "install minideepseek with `pip install -e .` from a clone of the repository")
    number = chapter.split("_")[0]
    number = number.zfill(2) if number.isdigit() else number
    matches = sorted(folder.glob(f"test_{number}_*.py"))
    if len(matches) != 1:
        available = sorted(p.stem.removeprefix("test_") for p in folder.glob("test_[0-9][0-9]_*.py"))
        raise GradeError(f"chapter {chapter!r} matches {len(matches)} test files in {folder}; "
                         f"chapters with exercises: {available}")
    return matches[0]


def _outcome(case: ElementTree.Element) -> Outcome:
    for tag, status in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
        found = case.find(tag)
        if found is not None:
            reason = (found.get("message") or found.text or "").strip().splitlines()
            return Outcome(case.get("name", "?"), False, status, reason[0] if reason else "")
    return Outcome(case.get("name", "?"), True, "PASS")


def read_junit(path: Path) -> list[Outcome]:
    """Every test case of a pytest ``--junitxml`` report."""
    return [_outcome(case) for case in ElementTree.parse(path).getroot().iter("testcase")]


def run_grading(chapter: str, student_dir: str | Path | None = None, reference: bool = False,
                root: Path = REPO_ROOT) -> list[Outcome]:
    """Run the chapter's tests in a pytest subprocess; one Outcome per test."""
    tests = exercise_tests(chapter, root)
    if reference:
        mode = []
    elif student_dir is not None:
        student = Path(student_dir).resolve()
        if not student.is_dir():
            raise GradeError(f"--student-dir {student_dir}: no such folder")
        mode = ["--student-dir", str(student)]
    else:
        mode = ["--student"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", str(tests), *mode, "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "-o", "addopts="]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        if not report.exists():
            raise GradeError(f"pytest wrote no report (exit status {done.returncode}):\n{done.stdout}{done.stderr}")
        outcomes = read_junit(report)
    if not outcomes:
        raise GradeError(f"no test ran in {tests} (pytest exit status {done.returncode}):\n{done.stdout}")
    return outcomes


def score_table(outcomes: list[Outcome]) -> str:
    width = max(len(o.test) for o in outcomes)
    lines = [f"  {o.status:<5} {o.test:<{width}}  {o.reason}".rstrip() for o in outcomes]
    passed = sum(o.passed for o in outcomes)
    return "\n".join(lines + [f"score: {passed}/{len(outcomes)}"])


def grade(chapter: str, student_dir: str | None = None, reference: bool = False) -> int:
    """Print the table and the score; return 0 for a full score, 1 otherwise."""
    tests = exercise_tests(chapter)
    folder = tests.stem.removeprefix("test_")
    what = (f"chapters/{folder}/solution.py" if reference else f"{folder} in {student_dir}" if student_dir
            else f"chapters/{folder}/exercise.py")
    print(f"grading {what} with {tests.relative_to(REPO_ROOT)}", flush=True)
    outcomes = run_grading(chapter, student_dir, reference)
    print(score_table(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1
