"""Run folders: how every pipeline writes its files so that a crash never leaves half of one.

Training (``train.py``), the R1 pipeline (``r1.py``) and the checkpoint writer (``checkpoint.py``)
all keep their results in a folder. They share four habits, written once here:

* ``atomic_path``: write beside the destination, flush to disk (``fsync``), then ``os.replace``
  it into place. A reader, or a run resumed after ``kill -9``, sees the old version or the new
  one, never a torn file.
* ``write_json``: a JSON file, written that way.
* ``append_jsonl`` / ``read_jsonl`` / ``rewrite_jsonl``: a log of one JSON object per line
  (``metrics.jsonl``). Appending is cheap; a run killed mid-line leaves a torn last line,
  which ``read_jsonl`` skips.
* ``save_figures``: matplotlib figures as PNGs, each written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TEMPORARY_PREFIX = ".tmp-"  # what an interrupted write leaves behind: never a finished file


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary file (or folder) beside ``path``; when the block succeeds, move it onto
    ``path`` with ``os.replace``; when it fails, delete it. Readers see the old or the new version, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMPORARY_PREFIX}{path.name}-{os.getpid()}")
    if directory:
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier process with the same id
        tmp.mkdir()
    try:
        yield tmp
        for written in (sorted(tmp.iterdir()) if directory else [tmp]):
            with open(written, "rb+") as f:
                os.fsync(f.fileno())  # on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: str | Path) -> None:
    """Delete what writes interrupted by a crash left in ``folder`` (``.tmp-*`` files and folders)."""
    for stale in Path(folder).glob(f"{TEMPORARY_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any, indent: int = 1) -> None:
    """``data`` as JSON in ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent) + "\n")


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Add one record as one line to a JSON-lines log."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log (none if it does not exist yet)."""
    path = Path(path)
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a run killed while writing it
    return records


def rewrite_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace a JSON-lines log with ``records``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


def save_figures(folder: str | Path, figures: Mapping[str, Figure], dpi: int = 110) -> None:
    """Each ``{"name.png": figure}`` as a PNG in ``folder``, written atomically."""
    for name, figure in figures.items():
        with atomic_path(Path(folder) / name) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
