"""Every figure function of minideepseek/plots draws a Figure; every image a lesson embeds exists."""

import re
from pathlib import Path

import matplotlib
import pytest
from matplotlib import pyplot
from matplotlib.figure import Figure

from minideepseek.plots import REPO_ROOT, figure_modules, save_figures

matplotlib.use("Agg")  # the figure functions choose no backend; the test runs headless

MODULES = figure_modules()
FIGURES = [(module, stem) for module in MODULES for stem in module.FIGURES]
LESSONS = sorted((REPO_ROOT / "chapters").glob("[0-9][0-9]_*/lesson.md"))
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")


def test_plots_modules_are_found():
    names = {module.__name__.rsplit(".", 1)[-1] for module in MODULES}
    assert {"overview", "norm", "rope"} <= names


@pytest.mark.parametrize("module, stem", FIGURES, ids=[f"{m.CHAPTER}/{stem}" for m, stem in FIGURES])
def test_figure_function_draws_a_figure(module, stem, monkeypatch):
    monkeypatch.setenv("MINIDEEPSEEK_QUICK", "1")  # figures that train or measure shorten their runs
    figure = module.FIGURES[stem]()
    try:
        assert isinstance(figure, Figure), f"{module.__name__}.FIGURES[{stem!r}] returned {type(figure).__name__}"
        assert figure.axes, "the figure has no axes"
    finally:
        pyplot.close(figure)  # a no-op for figures built without pyplot


@pytest.mark.parametrize("module", MODULES, ids=[m.CHAPTER for m in MODULES])
def test_chapter_has_every_figure_committed(module):
    folder = REPO_ROOT / "chapters" / module.CHAPTER
    assert folder.is_dir(), f"{module.__name__}.CHAPTER = {module.CHAPTER!r}: no such folder in chapters/"
    missing = [stem for stem in module.FIGURES if not (folder / "figures" / f"{stem}.png").exists()]
    assert not missing, f"run `python -m minideepseek.plots {module.CHAPTER[:2]}`: missing {missing}"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.parent.name for p in LESSONS])
def test_images_embedded_in_lessons_exist(lesson):
    images = [target for target in IMAGE.findall(lesson.read_text(encoding="utf-8")) if "://" not in target]
    missing = [target for target in images if not (lesson.parent / target).exists()]
    assert not missing, f"{lesson.relative_to(REPO_ROOT)} embeds missing images {missing}"


def test_save_figures_writes_pngs(tmp_path):
    from minideepseek.plots import norm

    written = save_figures(norm, out_dir=tmp_path, dpi=40)
    assert sorted(p.name for p in written) == sorted(f"{stem}.png" for stem in norm.FIGURES)
    for path in written:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
