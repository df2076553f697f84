"""The ``exercise`` fixture: load a chapter's functions, the reference, a student's, or a mutant.

* default: ``chapters/NN_slug/solution.py`` (the suite is green);
* ``--student``: ``chapters/NN_slug/exercise.py`` (the stubs, or a student's work in place);
* ``--student-dir DIR``: ``DIR/NN_slug/exercise.py`` or ``DIR/NN_slug.py``;
* ``--mutants DIR``: the known-wrong implementations ``DIR/NN_*.py`` (``tests/exercises/mutants/``)
  instead, each graded by the tests of chapter NN its docstring names (``Caught by: test_...``);
  ``test_mutants.py`` checks that each one fails them.
"""

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parents[2] / "chapters"
MUTANTS = Path(__file__).resolve().parent / "mutants"


def pytest_addoption(parser):
    group = parser.getgroup("minideepseek exercises")
    group.addoption("--mutants", default=None, metavar="DIR",
                    help="grade every known-wrong implementation DIR/NN_*.py with chapter NN's tests")


def chapter_folder(chapter: str) -> Path:
    """'03' or '03_mla' -> chapters/03_mla."""
    matches = sorted(CHAPTERS.glob(f"{chapter}*"))
    if len(matches) != 1:
        raise LookupError(f"chapter {chapter!r} matches {[m.name for m in matches]} in {CHAPTERS}")
    return matches[0]


def load_module(path: Path, name: str):
    if not path.exists():
        raise FileNotFoundError(f"no file to grade at {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    sys.path.insert(0, folder)  # a student's (or a mutant's) helper modules next to the graded file
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def mutant_files(chapter: str, folder: str | Path = MUTANTS) -> list[Path]:
    """The known-wrong implementations of chapter "NN": folder/NN_*.py."""
    return sorted(Path(folder).glob(f"{chapter}_*.py"))


def caught_by(path: Path) -> list[str]:
    """The tests a mutant's docstring says reject it: its line ``Caught by: test_a, test_b``."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = re.search(r"^Caught by:(.*?)(?:\n\s*\n|\Z)", docstring, re.MULTILINE | re.DOTALL)
    return [name.strip() for name in match.group(1).split(",")] if match else []


def pytest_generate_tests(metafunc):
    """With --mutants, each test runs once per mutant of its chapter that names it in ``Caught by:``."""
    folder = metafunc.config.getoption("--mutants", default=None)
    if not folder or "graded_file" not in metafunc.fixturenames:
        return
    chapter = metafunc.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:2]
    files = [f for f in mutant_files(chapter, folder) if metafunc.function.__name__ in caught_by(f)]
    metafunc.parametrize("graded_file", files, ids=[f.stem for f in files])


@pytest.fixture
def graded_file():
    """The file to grade instead of the chapter's (parametrised with --mutants); None otherwise."""
    return None


@pytest.fixture
def exercise(request, graded_file):
    """exercise("03") -> the module whose functions the test grades."""
    student = request.config.getoption("--student")
    student_dir = request.config.getoption("--student-dir")

    def load(chapter: str):
        folder = chapter_folder(chapter)
        if graded_file is not None:
            path = Path(graded_file)
        elif student_dir:
            base = Path(student_dir)
            candidates = [base / folder.name / "exercise.py", base / f"{folder.name}.py"]
            path = next((p for p in candidates if p.exists()), candidates[0])
        elif student:
            path = folder / "exercise.py"
        else:
            path = folder / "solution.py"
        return load_module(path, f"graded_{folder.name}_{path.stem}")

    return load


@pytest.fixture
def reference_only(request):
    """Skip a test that is not an exercise test (mutant runs, hints, hand-outs) when grading a student."""
    config = request.config
    if config.getoption("--student") or config.getoption("--student-dir") or config.getoption("--mutants", None):
        pytest.skip("not an exercise test: runs only on the reference solutions")
