"""The figures of every chapter, drawn by code.

One module per chapter topic. A module declares ``CHAPTER = "NN_slug"`` (the folder in
``chapters/`` that receives its pictures) and ``FIGURES = {"file_stem": function}``,
where every function takes no argument and returns a matplotlib ``Figure``. The
notebooks call these functions to show the figures; the lessons embed the PNGs that

    python -m minideepseek.plots [chapter ...]

writes to ``chapters/<CHAPTER>/figures/<file_stem>.png``.

Figure functions build a ``matplotlib.figure.Figure`` directly rather than through
``pyplot``: no backend is chosen, nothing is displayed twice in a notebook, and a loop
over many figures leaks no open windows. ``tests/test_figures.py`` calls every one of them
with ``MINIDEEPSEEK_QUICK=1`` set: a figure that trains or measures something must then
shorten its run to a second or two (``quick()`` below tells it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from types import ModuleType

from matplotlib.figure import Figure

from ..runfolder import save_figures as write_pngs

DPI = 120
REPO_ROOT = Path(__file__).resolve().parents[2]


def quick() -> bool:
    """True when ``MINIDEEPSEEK_QUICK=1`` (any value but empty or 0): tests and notebooks in CI want short
    runs, not final figures; ``minideepseek bench fp8`` reads it too."""
    return os.environ.get("MINIDEEPSEEK_QUICK", "") not in ("", "0")


def figure_modules() -> list[ModuleType]:
    """Every module of this package that declares ``CHAPTER`` and ``FIGURES``, in chapter order."""
    modules = [importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    modules = [m for m in modules if hasattr(m, "CHAPTER") and hasattr(m, "FIGURES")]
    return sorted(modules, key=lambda m: (m.CHAPTER, m.__name__))


def chapters_dir() -> Path:
    """``chapters/`` of the repository this package is installed from (an editable install)."""
    folder = REPO_ROOT / "chapters"
    if not folder.is_dir():
        raise FileNotFoundError(f"no chapters/ folder at {folder}: the figures are written into a clone of the "
                                "repository, so install it with `pip install -e .` from the clone")
    return folder


def save_figures(module: ModuleType, out_dir: Path | None = None, dpi: int = DPI) -> list[Path]:
    """Draw every figure of ``module`` and write ``<stem>.png`` into ``out_dir`` (default: its chapter's figures/)."""
    out_dir = Path(out_dir) if out_dir is not None else chapters_dir() / module.CHAPTER / "figures"
    written = []
    for stem, draw in module.FIGURES.items():
        figure = draw()
        if not isinstance(figure, Figure):
            raise TypeError(f"{module.__name__}.FIGURES[{stem!r}] returned {type(figure).__name__}, not a Figure")
        write_pngs(out_dir, {f"{stem}.png": figure}, dpi)
        written.append(out_dir / f"{stem}.png")
    return written
