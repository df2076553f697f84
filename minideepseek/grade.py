"""``minideepseek grade NN``: grade the exercise of chapter NN and print a score.

It runs the chapter's tests (``tests/exercises/test_NN_*.py`` of the repository) with
pytest in student mode, so it grades ``chapters/NN_slug/exercise.py``, or, with
``--student-dir DIR``, ``DIR/NN_slug/exercise.py`` (or ``DIR/NN_slug.py``). ``--reference``
grades the reference solutions instead (a teacher's check that the tests pass).

* ``--hint`` prints, for the first failing test, what it checks and the lesson section to reread
  (the test's docstring; no solution code).
* ``--all`` grades every chapter in one pytest run: with ``--student-dir``, every chapter the
  folder holds a file for. ``--csv FILE`` appends one row per chapter (student, chapter, passed,
  total) to FILE, so that a loop over a class's folders builds one table of scores.

The tests live in the repository, not in the installed package: install with
``pip install -e .`` from a clone.
"""

from __future__ import annotations

import ast
import csv
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800  # a student's infinite loop must not hang a whole class's grading


class GradeError(RuntimeError):
    """The grader cannot run: no tests folder, no such chapter, or pytest did not report."""


@dataclass
class Outcome:
    test: str
    passed: bool
    status: str  # PASS, FAIL, ERROR or SKIP
    reason: str = ""
    module: str = ""  # the test module, e.g. "test_01_rmsnorm"


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


def all_exercise_tests(root: Path = REPO_ROOT) -> list[Path]:
    """Every chapter's test file, in chapter order."""
    exercise_tests("00", root)  # the folder check
    return sorted((root / "tests" / "exercises").glob("test_[0-9][0-9]_*.py"))


def _outcome(case: ElementTree.Element) -> Outcome:
    module = case.get("classname", "").rsplit(".", 1)[-1]
    for tag, status in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
        found = case.find(tag)
        if found is not None:
            reason = (found.get("message") or found.text or "").strip().splitlines()
            return Outcome(case.get("name", "?"), False, status, reason[0] if reason else "", module)
    return Outcome(case.get("name", "?"), True, "PASS", "", module)


def read_junit(path: Path) -> list[Outcome]:
    """Every test case of a pytest ``--junitxml`` report."""
    return [_outcome(case) for case in ElementTree.parse(path).getroot().iter("testcase")]


def _mode(student_dir: str | Path | None, reference: bool) -> list[str]:
    if reference:
        return []
    if student_dir is not None:
        student = Path(student_dir).resolve()
        if not student.is_dir():
            raise GradeError(f"--student-dir {student_dir}: no such folder")
        return ["--student-dir", str(student)]
    return ["--student"]


def _run_pytest(tests: list[Path], mode: list[str], root: Path) -> list[Outcome]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", *map(str, tests), *mode, "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "-o", "addopts="]
        try:
            done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise GradeError(f"the tests did not finish within {TIMEOUT_S} s (an endless loop?)") from error
        if not report.exists():
            raise GradeError(f"pytest wrote no report (exit status {done.returncode}):\n{done.stdout}{done.stderr}")
        outcomes = read_junit(report)
    if not outcomes:
        raise GradeError(f"no test ran in {[t.name for t in tests]} (pytest exit status {done.returncode}):\n"
                         f"{done.stdout}")
    return outcomes


def run_grading(chapter: str, student_dir: str | Path | None = None, reference: bool = False,
                root: Path = REPO_ROOT) -> list[Outcome]:
    """Run the chapter's tests in a pytest subprocess; one Outcome per test."""
    tests = exercise_tests(chapter, root)
    return _run_pytest([tests], _mode(student_dir, reference), root)


def score_table(outcomes: list[Outcome]) -> str:
    width = max(len(o.test) for o in outcomes)
    lines = [f"  {o.status:<5} {o.test:<{width}}  {o.reason}".rstrip() for o in outcomes]
    passed = sum(o.passed for o in outcomes)
    return "\n".join(lines + [f"score: {passed}/{len(outcomes)}"])


# ------------------------------------------------------------------------------------------- hints
def hint_of_test(tests: Path, test_name: str) -> tuple[str, str] | None:
    """(what the test checks, the lesson section to reread), from the test function's docstring.

    The docstring says in one or two sentences what the test checks, and ends with a line
    ``Reread: <section title of the chapter's lesson>``. ``test_name`` may carry parameters ``[...]``.
    """
    name = test_name.split("[", 1)[0]
    for node in ast.parse(tests.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            doc = ast.get_docstring(node) or ""
            match = re.search(r"^\s*Reread:\s*(.+?)\s*$", doc, re.MULTILINE)
            text = " ".join(doc[:match.start()].split()) if match else " ".join(doc.split())
            return (text, match.group(1) if match else "") if text else None
    return None


def hint_for(tests: Path, outcomes: list[Outcome]) -> str | None:
    """The hint of the first test that did not pass, or None when every test passed."""
    failing = next((o for o in outcomes if not o.passed), None)
    if failing is None:
        return None
    chapter = tests.stem.removeprefix("test_")
    found = hint_of_test(tests, failing.test)
    lines = [f"hint: {failing.test} is the first test that does not pass."]
    if found is None:
        lines.append("  Run it alone for the full traceback: "
                     f"pytest {tests.relative_to(tests.parents[2])}::{failing.test.split('[')[0]} --student -x")
    else:
        text, section = found
        lines.append(f"  It checks: {text}")
        if section:
            lines.append(f"  Reread: chapters/{chapter}/lesson.md, section \"{section}\".")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- grading
def grade(chapter: str, student_dir: str | None = None, reference: bool = False, hint: bool = False) -> int:
    """Print the table and the score (and a hint with ``hint``); return 0 for a full score, 1 otherwise."""
    tests = exercise_tests(chapter)
    folder = tests.stem.removeprefix("test_")
    what = (f"chapters/{folder}/solution.py" if reference else f"{folder} in {student_dir}" if student_dir
            else f"chapters/{folder}/exercise.py")
    print(f"grading {what} with {tests.relative_to(REPO_ROOT)}", flush=True)
    outcomes = run_grading(chapter, student_dir, reference)
    print(score_table(outcomes))
    if hint:
        message = hint_for(tests, outcomes)
        print(message if message else "hint: every test passes, nothing to hint at.")
    return 0 if all(o.passed for o in outcomes) else 1


def student_chapters(student_dir: str | Path, root: Path = REPO_ROOT) -> list[Path]:
    """The test files of the chapters a student's folder holds a file for (NN_slug/exercise.py or NN_slug.py)."""
    base = Path(student_dir)
    return [tests for tests in all_exercise_tests(root)
            if (base / tests.stem.removeprefix("test_") / "exercise.py").exists()
            or (base / f"{tests.stem.removeprefix('test_')}.py").exists()]


def grade_all(student_dir: str | None = None, reference: bool = False, csv_path: str | None = None,
              root: Path = REPO_ROOT) -> int:
    """Grade every chapter (a student's: those their folder holds) in one pytest run; one score line per chapter.

    With ``csv_path``, append a row (student, chapter, passed, total) per chapter, and a header to a new file.
    Returns 0 when every graded chapter has a full score, 1 otherwise.
    """
    mode = _mode(student_dir, reference)
    tests = student_chapters(student_dir, root) if student_dir else all_exercise_tests(root)
    who = Path(student_dir).resolve().name if student_dir else ("reference" if reference else "chapters")
    if not tests:
        raise GradeError(f"{student_dir} holds no exercise file (NN_slug/exercise.py or NN_slug.py)")
    print(f"grading {who}: {len(tests)} chapter(s)", flush=True)
    outcomes = _run_pytest(tests, mode, root)
    rows = []
    for test_file in tests:
        chapter = test_file.stem.removeprefix("test_")
        mine = [o for o in outcomes if o.module == test_file.stem]
        passed = sum(o.passed for o in mine)
        rows.append((who, chapter, passed, len(mine)))
        print(f"  {chapter:<20} {passed}/{len(mine)}")
    total_passed, total = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"score: {total_passed}/{total}")
    if csv_path:
        path = Path(csv_path)
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["student", "chapter", "passed", "total"])
            writer.writerows(rows)
    return 0 if all(r[2] == r[3] and r[3] > 0 for r in rows) else 1
