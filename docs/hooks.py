"""MkDocs hook: the website reads the chapters, notebooks and package where they live.

Nothing is copied into docs/. At build time this hook

* adds every ``chapters/NN_slug/`` folder (``lesson.md`` as a page, ``figures/``,
  ``exercise.py`` and the rest as files, ``solution.py`` left out) and every
  ``notebooks/NN_slug.ipynb`` (rendered by mkdocs-jupyter),
* generates one API page per module of the package (rendered by mkdocstrings from the
  docstrings), and adds the package sources so a lesson may link to them,
* builds the navigation: home, the chapters in number order (title: the lesson's first
  ``# `` heading), the other pages of docs/, the API reference,
* serves MathJax from the ``jupyter-server-mathjax`` package when it is installed (no
  network needed to read the site), from a CDN otherwise,
* points pymdownx.snippets at the repository root, so ``--8<-- "minideepseek/rope.py:NAME"``
  works whatever the directory mkdocs is started from,
* lets a lesson link to a page of docs/ by its path in the repository
  (``../../docs/benchmarks.md``), which then works both on GitHub and on the site.

A new chapter needs no edit here: create its folder and notebook and they appear.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = ROOT / "minideepseek"
NUMBERED = re.compile(r"^(\d\d)_")
# Pages of docs/ listed right after the chapters, in this order; any other page follows them.
DOCS_ORDER = ["teaching.md", "benchmarks.md"]
SITE_SKIPS = {"solution.py"}  # the site hands out the exercise stubs, not the reference solutions
LINK_TARGET = re.compile(r"(\]\(\s*<?)((?:\.\./)+)docs/")
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js"
# What the TeX input and HTML-CSS output of MathJax 2 load at run time (the rest of the package is left out).
MATHJAX_PARTS = ["MathJax.js", "config", "extensions", "jax/input/TeX", "jax/element", "jax/output/HTML-CSS",
                 "fonts/HTML-CSS/STIX-Web"]


def _chapter_folders() -> list[Path]:
    return sorted(p for p in CHAPTERS.iterdir() if p.is_dir() and NUMBERED.match(p.name)) if CHAPTERS.is_dir() else []


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb")) if NOTEBOOKS.is_dir() else []


def _title(lesson: Path, fallback: str) -> str:
    """The first ``# `` heading of a Markdown file."""
    for line in lesson.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def _modules() -> list[str]:
    """Dotted names of every module of the package, ``__main__`` files left out."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__" or "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return sorted(names, key=lambda name: (name.count("."), name))


def _mathjax_dir() -> Path | None:
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "MathJax.js").exists() else None


def _uri(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _api_navigation() -> list:
    """The package's modules, then one section per subpackage (``minideepseek.plots``)."""
    modules = _modules()
    top = [name for name in modules if name.count(".") == 1]
    subpackages = [name for name in top if any(other.startswith(name + ".") for other in modules)]
    entries: list = [{"minideepseek (public API)": "api/minideepseek.md"}]
    entries += [{name: f"api/{name}.md"} for name in top if name not in subpackages]
    for package in subpackages:
        members = [name for name in modules if name == package or name.startswith(package + ".")]
        entries.append({package: [{name: f"api/{name}.md"} for name in members]})
    return entries


def _navigation(config) -> list:
    nav: list = [{"Home": "index.md"}]
    notebooks = {NUMBERED.match(p.name).group(1): p for p in _notebooks() if NUMBERED.match(p.name)}
    chapters = []
    for folder in _chapter_folders():
        number = NUMBERED.match(folder.name).group(1)
        lesson = folder / "lesson.md"
        entries = [{f"{number} · Lesson": _uri(lesson)}] if lesson.exists() else []
        if number in notebooks:
            entries.append({f"{number} · Notebook": _uri(notebooks.pop(number))})
        if entries:
            title = _title(lesson, folder.name) if lesson.exists() else folder.name
            chapters.append({title: entries})
    chapters += [{p.stem: _uri(p)} for p in notebooks.values()]  # notebooks without a chapter folder
    if chapters:
        nav.append({"Chapters": chapters})
    docs_dir = Path(config.docs_dir)
    pages = [p.name for p in sorted(docs_dir.glob("*.md")) if p.name != "index.md"]
    nav += sorted(pages, key=lambda name: DOCS_ORDER.index(name) if name in DOCS_ORDER else len(DOCS_ORDER))
    nav.append({"API reference": _api_navigation()})
    return nav


def on_config(config):
    config.nav = _navigation(config)
    snippets = config.mdx_configs.setdefault("pymdownx.snippets", {})
    snippets["base_path"] = [str(ROOT)]
    mathjax = _mathjax_dir()
    config.extra_javascript.append("assets/mathjax/MathJax.js" if mathjax else MATHJAX_CDN)
    return config


@event_priority(100)  # before mkdocs-jupyter, which turns the .ipynb files it is given into pages
def on_files(files: Files, config) -> Files:
    def add(path: Path) -> None:
        """A file of the repository, at the same path in the site as in the repository."""
        files.append(File(_uri(path), src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))

    for folder in _chapter_folders():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.name not in SITE_SKIPS:
                add(path)
    for notebook in _notebooks():
        add(notebook)
    for source in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in source.parts:
            add(source)
    for name in _modules():
        heading = f"# `{name}`\n\n::: {name}\n    options:\n      show_root_heading: false\n"
        files.append(File.generated(config, f"api/{name}.md", content=heading))
    mathjax = _mathjax_dir()
    if mathjax:
        for part in MATHJAX_PARTS:
            target = mathjax / part
            for path in [target] if target.is_file() else sorted(target.rglob("*")):
                if path.is_file() and "a11y" not in path.parts:  # the accessibility explorer: 4 MB, unused
                    uri = "assets/mathjax/" + path.relative_to(mathjax).as_posix()
                    files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Rewrite repository paths into docs/ (``../../docs/x.md``) to site paths (``../../x.md``)."""
    if not page.file.src_uri.startswith("chapters/"):
        return markdown
    depth = page.file.src_uri.count("/")
    return LINK_TARGET.sub(lambda m: m.group(1) + m.group(2) if len(m.group(2)) == 3 * depth else m.group(0),
                           markdown)
