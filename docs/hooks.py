"""MkDocs hook: the website reads the chapters, notebooks and package where they live.

Nothing is copied into docs/. At build time this hook

* adds every ``chapters/NN_slug/`` folder (``lesson.md`` as a page, ``figures/``,
  ``exercise.py`` and the rest as files, ``solution.py`` left out) and every
  ``notebooks/NN_slug.ipynb`` (rendered by mkdocs-jupyter),
* generates one exercise page per chapter (``chapters/NN_slug/exercise.md``): the lesson's
  "Exercise" section, the functions to write (read from ``exercise.py``), how to grade, hints,
  and the stub file itself,
* generates one API page per module of the package (rendered by mkdocstrings from the
  docstrings) and an overview of the modules, and adds the package sources so a lesson may
  link to them,
* completes the home page's course map with any chapter it does not list yet,
* builds the navigation: home, the chapters in number order (a section named after the
  lesson's first ``# `` heading, holding Lesson, Notebook and Exercise), the other pages of
  docs/, the API reference (its modules folded into one section),
* names every chapter page after its topic (``04 · DeepSeekMoE: notebook``) in the browser
  title, the header, the footer's Previous/Next and the search results, and ends it with links
  to the chapter's other pages and the next chapter,
* checks that the code a lesson shows is the package's code (``<!-- code: path:section -->``
  blocks, see ``minideepseek/lesson_code.py``): a difference is a warning, so
  ``mkdocs build --strict`` fails on it,
* lets a reader enlarge figures (a link to the full-size image; ``javascripts/figures.js``
  opens it over the page), gives each notebook a download link and a table of contents that
  matches its headings, ranks lessons above the API in search and keeps the API's source
  listings out of the search index,
* serves MathJax from the ``jupyter-server-mathjax`` package when it is installed (no
  network needed to read the site), from a CDN otherwise,
* points pymdownx.snippets at the repository root, so ``--8<-- "README.md:NAME"``
  works whatever the directory mkdocs is started from,
* lets a lesson link to a page of docs/ by its path in the repository
  (``../../docs/benchmarks.md``), which then works both on GitHub and on the site,
* puts the licence (``license`` in ``pyproject.toml``) in the footer, and a repository link
  when ``[project.urls]`` names one (``Repository``, ``Source`` or ``Homepage``).

A new chapter needs no edit here: create its folder and notebook and they appear.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import logging
import re
import sys
from pathlib import Path

from jinja2 import ChoiceLoader, DictLoader
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.toc import get_toc

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = ROOT / "minideepseek"
NUMBERED = re.compile(r"^(\d\d)_")
# Pages of docs/ listed right after the chapters, in this order; any other page follows them.
DOCS_ORDER = ["teaching.md", "notation.md", "traps.md", "benchmarks.md"]
SITE_SKIPS = {"solution.py"}  # the site hands out the exercise stubs, not the reference solutions
LINK_TARGET = re.compile(r"(\]\(\s*<?)((?:\.\./)+)docs/")
EXERCISE_LINK = re.compile(r"\]\(\s*<?exercise\.py>?\s*\)")
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js"
# What the TeX input and HTML-CSS output of MathJax 2 load at run time (the rest of the package is left out).
MATHJAX_PARTS = ["MathJax.js", "config", "extensions", "jax/input/TeX", "jax/element", "jax/output/HTML-CSS",
                 "fonts/HTML-CSS/STIX-Web"]
SEARCH_BOOST = {"lesson": 4, "exercise": 2, "notebook": 2, "api": 0.2}
log = logging.getLogger("mkdocs.hooks")


def _lesson_code():
    """minideepseek/lesson_code.py, loaded from its file (importing the package would import torch)."""
    name = "_minideepseek_lesson_code"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PACKAGE / "lesson_code.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _chapter_folders() -> list[Path]:
    return sorted(p for p in CHAPTERS.iterdir() if p.is_dir() and NUMBERED.match(p.name)) if CHAPTERS.is_dir() else []


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb")) if NOTEBOOKS.is_dir() else []


def _title(lesson: Path, fallback: str) -> str:
    """The first ``# `` heading of a Markdown file."""
    if lesson.exists():
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


def _module_summary(name: str) -> str:
    """The first line of a module's docstring, read without importing it."""
    path = ROOT.joinpath(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return docstring.strip().split("\n\n")[0].replace("\n", " ")


def _mathjax_dir() -> Path | None:
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "MathJax.js").exists() else None


def _uri(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _pyproject() -> dict:
    path = ROOT / "pyproject.toml"
    if tomllib is None or not path.exists():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})


# ----------------------------------------------------------------------------------------------
# Chapters: their pages, titles and links.

class Chapter:
    """One ``chapters/NN_slug/`` folder and its pages (site paths, ``None`` when absent)."""

    def __init__(self, folder: Path, notebook: Path | None):
        self.folder = folder
        self.number = NUMBERED.match(folder.name).group(1)
        lesson = folder / "lesson.md"
        self.title = _title(lesson, folder.name)
        self.lesson = _uri(lesson) if lesson.exists() else None
        self.notebook = _uri(notebook) if notebook else None
        self.exercise = f"{_uri(folder)}/exercise.md" if (folder / "exercise.py").exists() else None

    def pages(self) -> list[tuple[str, str]]:
        """(kind, site path) of each page, in reading order."""
        return [(kind, path) for kind, path in (("lesson", self.lesson), ("notebook", self.notebook),
                                                ("exercise", self.exercise)) if path]

    def page_title(self, kind: str) -> str:
        return self.title if kind == "lesson" else f"{self.title}: {kind}"


def _chapters() -> list[Chapter]:
    notebooks = {NUMBERED.match(p.name).group(1): p for p in _notebooks() if NUMBERED.match(p.name)}
    return [Chapter(folder, notebooks.get(NUMBERED.match(folder.name).group(1))) for folder in _chapter_folders()]


def _page_kinds() -> dict[str, tuple[Chapter, str]]:
    """Site path of every chapter page -> (its chapter, "lesson" | "notebook" | "exercise")."""
    return {path: (chapter, kind) for chapter in _chapters() for kind, path in chapter.pages()}


def _relative(from_uri: str, to_uri: str) -> str:
    """A Markdown link from one source page to another (mkdocs resolves .md and .ipynb links)."""
    source, target = Path(from_uri).parent.parts, Path(to_uri).parts
    common = 0
    while common < min(len(source), len(target) - 1) and source[common] == target[common]:
        common += 1
    return "/".join([".."] * (len(source) - common) + list(target[common:]))


def _chapter_links(chapter: Chapter, kind: str, src_uri: str) -> str:
    """The box that ends every chapter page: the chapter's other pages, the previous and next chapters."""
    chapters = _chapters()
    index = next(i for i, other in enumerate(chapters) if other.folder == chapter.folder)
    here = [f"**{name.capitalize()}**" if name == kind else f"[{name.capitalize()}]({_relative(src_uri, path)})"
            for name, path in chapter.pages()]
    lines = ['<div class="chapter-links" markdown>', "",
             f"**{chapter.title}**: " + " · ".join(here) + "  "]
    if index + 1 < len(chapters) and chapters[index + 1].lesson:
        following = chapters[index + 1]
        lines.append(f"Next chapter: [{following.title}]({_relative(src_uri, following.lesson)})  ")
    if index > 0 and chapters[index - 1].lesson:
        before = chapters[index - 1]
        lines.append(f"Previous chapter: [{before.title}]({_relative(src_uri, before.lesson)})  ")
    lines.append("All chapters: [the course map](" + _relative(src_uri, "index.md") + "#the-course)")
    return "\n".join(lines + ["", "</div>", ""])


def _section(markdown: str, heading: str) -> str | None:
    """The body of the ``## heading...`` section of a Markdown text (up to the next ``## ``), or None."""
    match = re.search(rf"^## {heading}[^\n]*\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    return match.group(1).strip() if match else None


def _anchor(heading: str) -> str:
    """The id Python-Markdown's toc extension gives a heading."""
    text = re.sub(r"[`*_]|\$[^$]*\$", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text)


def _exercise_page(chapter: Chapter) -> str:
    """The Markdown of a chapter's exercise page, generated from exercise.py and the lesson."""
    source = (chapter.folder / "exercise.py").read_text(encoding="utf-8")
    lesson = (chapter.folder / "lesson.md").read_text(encoding="utf-8") if chapter.lesson else ""
    tree = ast.parse(source)
    tests = sorted((ROOT / "tests" / "exercises").glob(f"test_{chapter.number}_*.py"))
    parts = [f"# {chapter.page_title('exercise')}", ""]
    task = _section(lesson, "Exercise")
    if task:
        parts += [task, ""]
    else:
        docstring = ast.get_docstring(tree) or ""
        parts += [docstring.split("\n\n")[0], ""]

    todo = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            body = ast.get_source_segment(source, node) or ""
            if "NotImplementedError" in body:
                summary = (ast.get_docstring(node) or "").strip().split("\n\n")[0].replace("\n", " ")
                kind = "class" if isinstance(node, ast.ClassDef) else "def"
                todo.append(f"| `{node.name}` ({kind}) | {summary} |")
    if todo:
        parts += ["## What to write", "",
                  "Each of these raises `NotImplementedError` until you write it; its docstring in the stub "
                  "says what it takes and returns.", "",
                  "| name | what it computes |", "|---|---|", *todo, ""]

    parts += ["## How to grade", "",
              "Put your work in the chapter's `exercise.py` (or download it below, into a copy of "
              f"`chapters/{chapter.folder.name}/`), then, from the repository:", "",
              "```bash",
              "# PASS/FAIL for each test, and a score",
              f"minideepseek grade {chapter.number}",
              "# what the first failing test checks, and the lesson section to reread",
              f"minideepseek grade {chapter.number} --hint"]
    if tests:
        parts += ["# the same tests, with pytest's own report", f"pytest {_uri(tests[0])} --student"]
    parts += ["```", ""]

    hints = []
    if chapter.lesson:
        lesson_link = _relative(chapter.exercise, chapter.lesson)
        for heading in re.findall(r"^## (.+)$", lesson, re.MULTILINE):
            if re.match(r"(The equations|The code|Pitfalls|The idea)", heading):
                hints.append(f"- The lesson's [{heading}]({lesson_link}#{_anchor(heading)}).")
    if chapter.notebook:
        hints.append(f"- The [notebook]({_relative(chapter.exercise, chapter.notebook)}) builds the same pieces "
                     "step by step and checks each against the package.")
    hints.append("- `minideepseek grade "
                 f"{chapter.number} --hint` names what the first failing test checks, without giving the answer.")
    parts += ["## Hints", "", *hints, ""]

    fence = "```"
    while fence in source:
        fence += "`"
    parts += ["## The stubs", "",
              '<p><a class="md-button" href="../exercise.py" download>Download exercise.py</a></p>', "",
              f'{fence}python title="chapters/{chapter.folder.name}/exercise.py"', source.rstrip("\n"), fence, ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Navigation.

def _api_navigation() -> list:
    """An overview page, then the modules and subpackages folded into one section."""
    modules = _modules()
    top = [name for name in modules if name.count(".") == 1]
    subpackages = [name for name in top if any(other.startswith(name + ".") for other in modules)]
    entries: list = [{"minideepseek (public API)": "api/minideepseek.md"}]
    entries += [{name: f"api/{name}.md"} for name in top if name not in subpackages]
    for package in subpackages:
        members = [name for name in modules if name == package or name.startswith(package + ".")]
        entries.append({package: [{name: f"api/{name}.md"} for name in members]})
    return [{"Overview": "api/index.md"}, {"Modules": entries}]


def _navigation(config) -> list:
    nav: list = [{"Home": "index.md"}]
    chapters = []
    numbered = set()
    for chapter in _chapters():
        entries = [{kind.capitalize(): path} for kind, path in chapter.pages()]
        if entries:
            chapters.append({chapter.title: entries})
        numbered.add(chapter.number)
    chapters += [{p.stem: _uri(p)} for p in _notebooks()  # notebooks without a chapter folder
                 if not (NUMBERED.match(p.name) and NUMBERED.match(p.name).group(1) in numbered)]
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
    project = _pyproject()
    licence = project.get("license")
    licence = licence.get("text") if isinstance(licence, dict) else licence
    if licence and not config.copyright:
        config.copyright = f"{config.site_name} is released under the {licence} licence."
    urls = {key.lower(): value for key, value in (project.get("urls") or {}).items()}
    repository = urls.get("repository") or urls.get("source") or urls.get("homepage")
    if repository and not config.repo_url:
        config.repo_url = repository
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
    for chapter in _chapters():
        if chapter.exercise:
            files.append(File.generated(config, chapter.exercise, content=_exercise_page(chapter)))
    for notebook in _notebooks():
        add(notebook)
    for source in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in source.parts:
            add(source)
    modules = _modules()
    for name in modules:
        heading = f"# `{name}`\n\n::: {name}\n    options:\n      show_root_heading: false\n"
        files.append(File.generated(config, f"api/{name}.md", content=heading))
    rows = "\n".join(f"| [`{name}`]({name}.md) | {_module_summary(name)} |" for name in modules)
    overview = ("# API reference\n\nEvery module of the package, generated from its docstrings. The names most "
                "programs need are importable from `minideepseek` itself: see "
                "[the public API](minideepseek.md).\n\n| module | what it holds |\n|---|---|\n" + rows + "\n")
    files.append(File.generated(config, "api/index.md", content=overview))
    mathjax = _mathjax_dir()
    if mathjax:
        for part in MATHJAX_PARTS:
            target = mathjax / part
            for path in [target] if target.is_file() else sorted(target.rglob("*")):
                if path.is_file() and "a11y" not in path.parts:  # the accessibility explorer: 4 MB, unused
                    uri = "assets/mathjax/" + path.relative_to(mathjax).as_posix()
                    files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


# ----------------------------------------------------------------------------------------------
# Pages.

def _complete_course_map(markdown: str) -> str:
    """The home page's course map, with a row added for every chapter it does not list yet."""
    lines = markdown.split("\n")
    rows = [i for i, line in enumerate(lines) if line.startswith("| ") and "chapters/" in line]
    if not rows:
        return markdown
    missing = []
    for chapter in _chapters():
        if chapter.lesson and chapter.lesson not in markdown:
            number, _, name = chapter.title.partition(" · ")
            pages = [f"[{kind}]({path})" for kind, path in chapter.pages() if kind != "lesson"]
            missing.append(f"| {number} · [{name or chapter.title}]({chapter.lesson}) | | {' · '.join(pages)} |")
    lines[rows[-1] + 1:rows[-1] + 1] = missing
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Lessons: check their code blocks, link their exercise page, end with the chapter's links."""
    src = page.file.src_uri
    if src == "index.md":
        return _complete_course_map(markdown)
    if not src.startswith("chapters/"):
        return markdown
    chapter, kind = _page_kinds().get(src, (None, None))
    if kind == "lesson":
        lesson_code = _lesson_code()
        for drift in lesson_code.drifts(markdown, Path(src), ROOT):
            log.warning(f"{drift}: run `python -m minideepseek.lesson_code --write`")
        markdown = EXERCISE_LINK.sub("](exercise.md)", markdown)
    # Repository paths into docs/ (``../../docs/x.md``) become site paths (``../../x.md``).
    depth = src.count("/")
    markdown = LINK_TARGET.sub(lambda m: m.group(1) + m.group(2) if len(m.group(2)) == 3 * depth else m.group(0),
                               markdown)
    if chapter is not None:
        markdown = markdown.rstrip("\n") + "\n\n" + _chapter_links(chapter, kind, src)
    return markdown


LINE_SPAN = re.compile(r'<span id="(__span-\d+-\d+)">((?:<span class="w">)?)( +)')
IMG = re.compile(r"<img\b[^>]*?\bsrc=\"(?P<src>[^\"]+)\"[^>]*>")
HEADING = re.compile(r"<h(?P<level>[1-6])\b[^>]*?\bid=\"(?P<id>[^\"]+)\"[^>]*>(?P<body>.*?)</h(?P=level)>", re.DOTALL)


def _link_figures(content: str) -> str:
    """Wrap each image that is not already a link in a link to itself (enlarged by javascripts/figures.js)."""
    out, last = [], 0
    for match in IMG.finditer(content):
        before = content[max(0, match.start() - 200):match.start()]
        linked = before.rfind("<a ") > before.rfind("</a>")
        out.append(content[last:match.start()])
        if linked or match["src"].startswith("data:"):
            out.append(match.group(0))
        else:
            out.append(f'<a class="figure-link" href="{match["src"]}" title="Open the full-size figure">'
                       f"{match.group(0)}</a>")
        last = match.end()
    return "".join(out) + content[last:]


NOTEBOOK_CODE = re.compile(r'(<div class="highlight-ipynb[^"]*"><pre>)(.*?)(</pre>)', re.DOTALL)


def _code_lines(code: str) -> str:
    """Highlighted code (Pygments HTML) with each line in its own span that knows its indentation.

    Token spans that run over several lines (a docstring) are closed at each line's end and
    reopened on the next, so every line span is balanced.
    """
    lines, current, stack = [], [], []
    for piece in re.split(r"(<[^>]+>)", code):
        if piece.startswith("</"):
            stack.pop() if stack else None
            current.append(piece)
        elif piece.startswith("<"):
            stack.append(piece)
            current.append(piece)
        else:
            parts = piece.split("\n")
            for i, part in enumerate(parts):
                current.append(part)
                if i < len(parts) - 1:
                    lines.append("".join(current) + "</span>" * len(stack) + "\n")
                    current = list(stack)
    if "".join(current):
        lines.append("".join(current) + "</span>" * len(stack))
    out = []
    for line in lines:
        text = html.unescape(re.sub(r"<[^>]+>", "", line))
        indent = len(text) - len(text.lstrip(" "))
        out.append(f'<span class="code-line" style="--indent:{indent}ch">{line}</span>')
    return "".join(out)


def _notebook_toc(content: str):
    """The table of contents of a rendered notebook, from the headings' real ids.

    mkdocs-jupyter computes it from the Markdown cells with another slug rule, which breaks
    the links of headings that contain code.
    """
    tokens: list[dict] = []
    stack: list[dict] = []
    for match in HEADING.finditer(content):
        name = re.sub(r"<a class=\"anchor-link\".*?</a>", "", match["body"], flags=re.DOTALL)
        name = html.unescape(re.sub(r"<[^>]+>", "", name)).strip().rstrip("¶").strip()
        token = {"level": int(match["level"]), "id": match["id"], "name": html.escape(name), "children": []}
        while stack and stack[-1]["level"] >= token["level"]:
            stack.pop()
        (stack[-1]["children"] if stack else tokens).append(token)
        stack.append(token)
    return get_toc(tokens)


def on_page_content(content: str, page, config, files) -> str:
    src = page.file.src_uri
    if src.startswith("api/"):
        # The source listings stay on the page but out of the search index.
        content = re.sub(r'<details(?=[^>]*class="[^"]*(?:quote|mkdocstrings-source))', "<details data-search-exclude",
                         content)
    chapter, kind = _page_kinds().get(src, (None, None))
    if kind == "notebook":
        page.toc = _notebook_toc(content)
        content = NOTEBOOK_CODE.sub(lambda m: m[1] + _code_lines(m[2]) + m[3], content)
        name = Path(src).name
        download = (f'<p class="notebook-download"><a class="md-button" href="{name}" download>'
                    f"Download the notebook</a> <span>{name}: open it in the repository with "
                    f"<code>jupyter lab {src}</code></span></p>")
        links = _chapter_links(chapter, kind, src)
        import markdown as md

        links_html = md.markdown(links, extensions=["md_in_html"])
        links_html = re.sub(r'href="([^"#]+?)\.(md|ipynb)(#[^"]*)?"',
                            lambda m: f'href="{_site_url(page, m[1] + "." + m[2])}{m[3] or ""}"', links_html)
        content = download + content + links_html
    if not src.startswith("api/"):
        content = _link_figures(content)
    # Each code line says how far it is indented, so that a wrapped line continues under its own start.
    content = LINE_SPAN.sub(lambda m: f'<span id="{m[1]}" style="--indent:{len(m[3])}ch">{m[2]}{m[3]}', content)
    return content


def _site_url(page, link: str) -> str:
    """A link written for the Markdown source of ``page``, as a URL relative to the built page."""
    target = (Path(page.file.src_uri).parent / link).as_posix()
    parts = []
    for part in target.split("/"):
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    target = "/".join(parts)
    target = re.sub(r"(index)?\.(md|ipynb)$", "", target)
    target = target if target.endswith("/") or not target else target + "/"
    depth = page.url.count("/")
    return "../" * depth + target


@event_priority(100)  # before the search plugin indexes the page
def on_page_context(context, page, config, nav):
    src = page.file.src_uri
    chapter, kind = _page_kinds().get(src, (None, None))
    if chapter is not None:
        page.meta["title"] = chapter.page_title(kind)
    boost = SEARCH_BOOST.get("api" if src.startswith("api/") else kind)
    if boost is not None:
        page.meta.setdefault("search", {})["boost"] = boost
    return context


def on_env(env, config, files):
    """The footer's Previous/Next name a chapter page by its topic (its meta title), not "Notebook"."""
    titles = {path: chapter.page_title(kind) for path, (chapter, kind) in _page_kinds().items()}
    env.globals["topic_title"] = lambda page: titles.get(page.file.src_uri, page.title) if page else ""
    try:
        footer = env.loader.get_source(env, "partials/footer.html")[0]
    except Exception:  # another theme: leave its footer alone
        return env
    for which in ("previous_page", "next_page"):
        footer = footer.replace(f"{{{{ page.{which}.title }}}}", f"{{{{ topic_title(page.{which}) }}}}")
        footer = footer.replace(f"{{{{ page.{which}.title | e }}}}", f"{{{{ topic_title(page.{which}) | e }}}}")
    env.loader = ChoiceLoader([DictLoader({"partials/footer.html": footer}), env.loader])
    return env
