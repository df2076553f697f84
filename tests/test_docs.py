"""The website builds with ``mkdocs build --strict``: a broken link or a missing snippet fails it.

The build also has to show what the hook adds: every chapter lesson, notebook and exercise
page, the API pages, the figures and MathJax. And every lesson shows the package's code as it
is (``python -m minideepseek.lesson_code --write`` rewrites them after a change).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minideepseek import lesson_code

ROOT = Path(__file__).resolve().parents[1]


def test_lessons_show_the_package_code():
    """Each ``<!-- code: path:section -->`` block of a lesson holds exactly that section of the package."""
    assert lesson_code.lessons(), "no lessons found"
    drifted = lesson_code.check()
    assert not drifted, ("lesson code differs from the package (python -m minideepseek.lesson_code --write):\n"
                         + "\n".join(map(str, drifted)))
    for lesson in lesson_code.lessons():
        text = lesson.read_text(encoding="utf-8")
        assert "--8<--" not in text, f"{lesson.relative_to(ROOT)} includes code by snippet: a code host shows no code"


def test_lesson_code_detects_drift(tmp_path):
    package = tmp_path / "pkg.py"
    package.write_text("x = 0\n# --8<-- [start:part]\nif x:\n    y = 1  # kept\n# --8<-- [end:part]\n")
    lesson = '<!-- code: pkg.py:part -->\n```python\n\n```\n'
    synced = lesson_code.sync(lesson, tmp_path)
    assert synced == '<!-- code: pkg.py:part -->\n```python\nif x:\n    y = 1  # kept\n```\n'
    assert lesson_code.drifts(synced, root=tmp_path) == []
    assert len(lesson_code.drifts(synced.replace("y = 1", "y = 2"), root=tmp_path)) == 1
    assert lesson_code.sync('```python\n--8<-- "pkg.py:part"\n```\n', tmp_path) == synced



def _docs_extra():
    for plugin in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings"):
        pytest.importorskip(plugin, reason="the docs extra is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _docs_extra()
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [done.stderr[-4000:]])
    return out


def test_every_chapter_and_notebook_is_a_page(site):
    for lesson in sorted((ROOT / "chapters").glob("[0-9][0-9]_*/lesson.md")):
        page = site / "chapters" / lesson.parent.name / "lesson" / "index.html"
        assert page.exists(), f"{lesson.relative_to(ROOT)} was not built"
        html = page.read_text(encoding="utf-8")
        assert "--8&lt;--" not in html and '--8<--' not in html, f"an unresolved snippet in {page}"
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (site / "notebooks" / notebook.stem / "index.html").exists(), f"{notebook.name} was not built"


def test_lesson_page_has_math_figures_and_code(site):
    html = (site / "chapters" / "02_rope_yarn" / "lesson" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in html
    assert "assets/mathjax/MathJax.js" in html or "MathJax.js" in html
    assert 'src="../figures/yarn_frequencies.png"' in html
    assert (site / "chapters" / "02_rope_yarn" / "figures" / "yarn_frequencies.png").exists()
    text = re.sub(r"<[^>]+>", "", html)  # Pygments wraps every token of the code in its own <span>
    assert "def rope_frequencies(config: ModelConfig)" in text  # the package code, as the lesson shows it
    assert 'class="figure-link" href="../figures/yarn_frequencies.png"' in html  # click to enlarge
    assert "<title>02 · RoPE and YaRN - minideepseek</title>" in html


def test_chapter_pages_exercise_and_notebook_extras(site):
    for folder in sorted((ROOT / "chapters").glob("[0-9][0-9]_*")):
        if not (folder / "exercise.py").exists():
            continue
        page = site / "chapters" / folder.name / "exercise" / "index.html"
        assert page.exists(), f"no exercise page for {folder.name}"
        html = page.read_text(encoding="utf-8")
        assert f"minideepseek grade {folder.name[:2]}" in html and 'href="../exercise.py"' in html
        assert "NotImplementedError" in re.sub(r"<[^>]+>", "", html)  # the stubs themselves
        assert 'class="chapter-links"' in html
        lesson = (site / "chapters" / folder.name / "lesson" / "index.html").read_text(encoding="utf-8")
        assert 'href="../exercise/"' in lesson, f"{folder.name}'s lesson does not link its exercise page"
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "notebooks" / notebook.stem / "index.html").read_text(encoding="utf-8")
        assert f'href="{notebook.name}" download' in html and (site / "notebooks" / notebook.stem / notebook.name).exists()
        ids = set(re.findall(r'\bid="([^"]+)"', html))
        toc = re.findall(r'<a href="#([^"]+)" class="md-nav__link"', html)
        assert toc and not [anchor for anchor in toc if anchor not in ids], f"broken contents links in {notebook.name}"


def test_api_reference_and_navigation(site):
    api = (site / "api" / "minideepseek.rope" / "index.html").read_text(encoding="utf-8")
    assert "apply_rotary_emb" in api
    home = (site / "index.html").read_text(encoding="utf-8")
    positions = [home.find(f"chapters/{name}/lesson/") for name in ("00_big_picture", "01_rmsnorm", "02_rope_yarn")]
    assert -1 not in positions and positions == sorted(positions), "chapters missing or out of order in the nav"
    assert 'class="md-copyright"' in home and "licence" in home
    course = home[home.find('id="the-course"'):]
    for lesson in sorted((ROOT / "chapters").glob("[0-9][0-9]_*/lesson.md")):
        assert f'href="chapters/{lesson.parent.name}/lesson/"' in course, f"the course map misses {lesson.parent.name}"
    search = (site / "search" / "search_index.json").read_text(encoding="utf-8")
    assert '"boost":4' in search.replace(" ", "")  # lessons rank above the API in search
