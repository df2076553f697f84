"""The website builds with ``mkdocs build --strict``: a broken link or a missing snippet fails it.

The build also has to show what the hook adds: every chapter lesson and notebook, the API
pages, the figures and MathJax.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

for plugin in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings"):
    pytest.importorskip(plugin, reason="the docs extra is not installed: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
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
    assert "def rope_frequencies(config: ModelConfig)" in text  # the package code, included by pymdownx.snippets


def test_api_reference_and_navigation(site):
    api = (site / "api" / "minideepseek.rope" / "index.html").read_text(encoding="utf-8")
    assert "apply_rotary_emb" in api
    home = (site / "index.html").read_text(encoding="utf-8")
    positions = [home.find(f"chapters/{name}/lesson/") for name in ("00_big_picture", "01_rmsnorm", "02_rope_yarn")]
    assert -1 not in positions and positions == sorted(positions), "chapters missing or out of order in the nav"
