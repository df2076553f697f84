"""``minideepseek handout DIR``: a student's folder, without the solutions.

For each chapter, ``DIR/NN_slug/`` receives what ``chapters/NN_slug/`` holds except the reference
solution (``exercise.py``, the stubs; ``lesson.md``; its ``figures/`` and other files) and the
chapter's notebook ``notebooks/NN_slug.ipynb``. ``DIR/README.md`` says how to grade the work:
``minideepseek grade NN --student-dir DIR``, which needs only this folder and an install of
minideepseek from a clone (the graders live in the repository's ``tests/exercises/``).

No ``solution*.py`` file is ever copied, and an existing chapter folder is never overwritten
(a student's work may be in it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = ("solution*.py", "__pycache__", "*.pyc", ".ipynb_checkpoints")

README = """# minideepseek exercises

One folder per chapter: `lesson.md` (with its figures), the notebook, and `exercise.py`, the
functions to write (each raises `NotImplementedError` until you do).

Grade a chapter (from anywhere, with minideepseek installed from a clone of its repository):

```bash
minideepseek grade NN --student-dir {folder}           # PASS/FAIL per test and a score
minideepseek grade NN --student-dir {folder} --hint    # plus what the first failing test checks
minideepseek grade --all --student-dir {folder}        # every chapter of this folder
```

Chapters: {chapters}.
"""


class HandoutError(ValueError):
    """No such chapter, or a chapter folder that is already there."""


def chapter_folders(chapters: list[str] | None = None, root: Path = REPO_ROOT) -> list[Path]:
    """chapters/NN_slug for "NN" (or "N", or "NN_slug"); every chapter with an exercise when None."""
    available = sorted(p.parent for p in (root / "chapters").glob("[0-9][0-9]_*/exercise.py"))
    if chapters is None:
        return available
    folders = []
    for chapter in chapters:
        number = chapter.strip().split("_")[0]
        number = number.zfill(2) if number.isdigit() else number
        matches = [f for f in available if f.name.split("_")[0] == number]
        if len(matches) != 1:
            raise HandoutError(f"no chapter {chapter!r} with an exercise; chapters: {[f.name for f in available]}")
        folders.append(matches[0])
    return folders


def write_handout(dest: str | Path, chapters: list[str] | None = None, root: Path = REPO_ROOT) -> list[Path]:
    """Write DIR/NN_slug/ for each chapter and DIR/README.md; returns the chapter folders written."""
    dest = Path(dest)
    sources = chapter_folders(chapters, root)
    taken = [dest / src.name for src in sources if (dest / src.name).exists()]
    if taken:
        raise HandoutError(f"{', '.join(map(str, taken))} already exist(s): not overwriting a student's folder")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sources:
        target = dest / src.name
        shutil.copytree(src, target, ignore=shutil.ignore_patterns(*LEFT_OUT))
        notebook = root / "notebooks" / f"{src.name}.ipynb"
        if notebook.exists():
            shutil.copy2(notebook, target / notebook.name)
        written.append(target)
    leaked = [p for target in written for p in target.rglob("solution*.py")]
    if leaked:  # never: the copy ignores them; a last guard because the point of a hand-out is this
        raise HandoutError(f"solutions copied into the hand-out: {leaked}")
    names = sorted(p.name for p in dest.iterdir() if p.is_dir())
    (dest / "README.md").write_text(README.format(folder=dest, chapters=", ".join(names)))
    return written
