"""The ``exercise`` fixture: load a chapter's functions, the reference or a student's."""

import importlib.util
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parents[2] / "chapters"


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
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def exercise(request):
    """exercise("03") -> the module whose functions the test grades."""
    student = request.config.getoption("--student")
    student_dir = request.config.getoption("--student-dir")

    def load(chapter: str):
        folder = chapter_folder(chapter)
        if student_dir:
            base = Path(student_dir)
            candidates = [base / folder.name / "exercise.py", base / f"{folder.name}.py"]
            path = next((p for p in candidates if p.exists()), candidates[0])
        elif student:
            path = folder / "exercise.py"
        else:
            path = folder / "solution.py"
        return load_module(path, f"graded_{folder.name}_{path.stem}")

    return load
