"""Every known-wrong implementation in tests/exercises/mutants/ must fail its chapter's grader.

A mutant is a whole exercise module (most start from the reference solution and replace one
function, see ``mutants/_reference.py``) whose docstring names the bug and, on a line
``Caught by: test_a, test_b``, the grader tests that must reject it. One pytest subprocess grades
every mutant with those tests of its chapter (``--mutants``); this test fails if a mutant passes
any of them, so no mutant can get a full score. It is skipped when grading a student.
"""

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

import pytest

HERE = Path(__file__).resolve().parent
MUTANTS = HERE / "mutants"
ROOT = HERE.parents[1]
CORE = {"01", "02", "03", "04", "07", "09", "10"}  # at least five mutants each; three for the others


def mutants() -> dict[str, str]:
    """{file stem: docstring} of every mutant."""
    return {path.stem: ast.get_docstring(ast.parse(path.read_text())) or ""
            for path in sorted(MUTANTS.glob("[0-9][0-9]_*.py"))}


def caught_by(docstring: str) -> list[str]:
    """The tests named on the docstring's ``Caught by:`` line (continued on the next lines up to a blank one)."""
    match = re.search(r"^Caught by:(.*?)(?:\n\s*\n|\Z)", docstring, re.MULTILINE | re.DOTALL)
    return [name.strip() for name in match.group(1).split(",")] if match else []


def test_every_chapter_has_documented_mutants(reference_only):
    found = mutants()
    chapters = sorted(p.stem.removeprefix("test_")[:2] for p in HERE.glob("test_[0-9][0-9]_*.py"))
    for chapter in chapters:
        count = sum(stem.startswith(chapter + "_") for stem in found)
        assert count >= (5 if chapter in CORE else 3), f"chapter {chapter} has {count} mutants"
    for stem, docstring in found.items():
        assert docstring.strip(), f"{stem}: the docstring must name the bug"
        names = caught_by(docstring)
        assert names, f"{stem}: no 'Caught by: test_...' line in the docstring"
        (tests,) = HERE.glob(f"test_{stem[:2]}_*.py")
        defined = {node.name for node in ast.parse(tests.read_text()).body if isinstance(node, ast.FunctionDef)}
        assert set(names) <= defined, f"{stem}: {sorted(set(names) - defined)} are not tests of {tests.name}"


def test_every_mutant_fails_its_chapter_grader(reference_only, tmp_path):
    report = tmp_path / "mutants.xml"
    tests = sorted(str(p) for p in HERE.glob("test_[0-9][0-9]_*.py"))
    command = [sys.executable, "-m", "pytest", *tests, "--mutants", str(MUTANTS), "-q", "--tb=no",
               "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={report}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, dict[str, bool]] = defaultdict(dict)
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        match = re.fullmatch(r"(\w+)\[(.*)\]", name)
        if not match:
            continue
        failed = any(case.find(tag) is not None for tag in ("failure", "error"))
        for stem in mutants():
            if re.search(rf"(^|-){re.escape(stem)}($|-)", match.group(2)):
                results[stem][match.group(1)] = results[stem].get(match.group(1), False) or failed
    problems = []
    for stem, docstring in mutants().items():
        outcomes = results.get(stem)
        if not outcomes:
            problems.append(f"{stem}: no grader test ran")
            continue
        problems += [f"{stem}: passes {test}, which its docstring says catches it"
                     for test in caught_by(docstring) if not outcomes.get(test, False)]
    assert not problems, "mutants the graders do not reject:\n" + "\n".join(problems)


@pytest.mark.parametrize("stem", ["01_bf16_without_upcast", "03_absorbed_scores_reexpand_keys",
                                  "09_decode_reexpands_the_cache", "10_no_clamp_before_cast"])
def test_the_four_reported_holes_are_mutants(reference_only, stem):
    assert (MUTANTS / f"{stem}.py").exists()
