"""The package's code, shown in the lessons: one source of truth, copied by one command.

A lesson walks through the package's own code. The package marks the lines a lesson shows,
around them, with two comments (``start`` and ``end`` with the section's name, in the
``pymdownx.snippets`` syntax, so the website's snippet tools understand them too)::

    # ;--8<-- [start:frequencies]
    def rope_frequencies(config: ModelConfig) -> torch.Tensor:
        ...
    # ;--8<-- [end:frequencies]

(written here with a ``;`` in front, which keeps the snippet tools from reading them as markers).
The lesson holds a copy of those lines, in a fenced block right under an HTML comment that names
the section, so the code shows on a code host, in an editor and in the handed-out chapter folder
as well as on the website::

    <!-- code: minideepseek/rope.py:frequencies -->
    ```python
    def rope_frequencies(config: ModelConfig) -> torch.Tensor:
        ...
    ```

After changing the package (or adding a marker to a lesson, with an empty fence under it),
rewrite every lesson from the package with::

    python -m minideepseek.lesson_code --write

and check, without writing, that every lesson shows exactly the package's code with::

    python -m minideepseek.lesson_code          # exit status 1 and the list when one drifted

``tests/test_docs.py`` runs the check, and the website build warns (and ``--strict`` fails) when a
lesson's copy and the package differ. The section is read as ``pymdownx.snippets`` reads it: the
lines between the two markers, other sections' markers left out, the common indentation removed.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A section marker of pymdownx.snippets, "--8<-- [start:name]" or "[end:name]" (not one escaped with ";").
SECTION = re.compile(r"^(?P<pre>.*?)(?<!;)(?!(?<=-)-)(?P<escape>;*)-{1,}8<-{1,}[ \t]+"
                     r"\[[ \t]*(?P<type>start|end)[ \t]*:[ \t]*(?P<name>[a-z][-_0-9a-z]*)[ \t]*\]", re.IGNORECASE)
# <!-- code: path:section --> and the fenced block right under it (an empty one is filled in).
BLOCK = re.compile(r"^<!-- code: (?P<path>[^:\s]+):(?P<name>[-\w]+) -->\n"
                   r"(?P<fence>`{3,})(?P<lang>[\w+-]*)\n(?P<code>(?:.*\n)*?)(?P=fence)[ \t]*$", re.MULTILINE)
# The snippet form the lessons used before: a fence holding only  --8<-- "path:section".
SNIPPET = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)\n-{1,}8<-{1,}[ \t]+\"(?P<path>[^\":]+):(?P<name>[-\w]+)\"\n"
                     r"(?P=fence)[ \t]*$", re.MULTILINE)


def section(path: str | Path, name: str, root: Path = ROOT) -> str:
    """The lines of ``path`` between its ``start:name`` and ``end:name`` markers, dedented.

    Raises ``KeyError`` when the file has no such section.
    """
    lines, inside, found = [], False, False
    for line in (root / path).read_text(encoding="utf-8").split("\n"):
        match = SECTION.match(line)
        if match and match.group("escape"):
            if inside:
                lines.append(line.replace(";", "", 1))
            continue
        if match and match.group("name") == name:
            if match.group("type") == "start":
                inside = found = True
                continue
            if inside:
                break
        if match:  # another section's marker
            continue
        if inside:
            lines.append(line)
    if not found:
        raise KeyError(f"{path} has no section {name!r} (no '--8<-- [start:{name}]' marker)")
    return textwrap.dedent("\n".join(lines)).strip("\n")


def _block(path: str, name: str, lang: str, code: str) -> str:
    fence = "```"
    while fence in code:
        fence += "`"
    return f"<!-- code: {path}:{name} -->\n{fence}{lang or 'python'}\n{code}\n{fence}"


def sync(markdown: str, root: Path = ROOT) -> str:
    """``markdown`` with every marked block holding its section's current code.

    A fence holding only a ``--8<-- "path:name"`` line (the snippet form) becomes a marked block too.
    """
    markdown = SNIPPET.sub(lambda m: _block(m["path"], m["name"], m["lang"], section(m["path"], m["name"], root)),
                           markdown)
    return BLOCK.sub(lambda m: _block(m["path"], m["name"], m["lang"], section(m["path"], m["name"], root)), markdown)


@dataclass
class Drift:
    """A lesson block whose code is not its section's: where, and which section."""

    lesson: Path
    line: int
    source: str  # "minideepseek/rope.py:frequencies"

    def __str__(self) -> str:
        return f"{self.lesson}:{self.line}: differs from {self.source}"


def drifts(markdown: str, lesson: Path = Path("lesson.md"), root: Path = ROOT) -> list[Drift]:
    """The marked blocks of ``markdown`` (and snippet lines) that do not hold their section's code."""
    found = []
    for match in BLOCK.finditer(markdown):
        source = f"{match['path']}:{match['name']}"
        try:
            current = section(match["path"], match["name"], root)
        except (KeyError, FileNotFoundError):
            current = None
        if match["code"].rstrip("\n") != current:
            found.append(Drift(lesson, markdown.count("\n", 0, match.start()) + 1, source))
    for match in SNIPPET.finditer(markdown):
        found.append(Drift(lesson, markdown.count("\n", 0, match.start()) + 1,
                           f"{match['path']}:{match['name']} (a snippet line, not the code)"))
    return found


def lessons(root: Path = ROOT) -> list[Path]:
    """Every chapter's lesson."""
    return sorted((root / "chapters").glob("[0-9][0-9]_*/lesson.md"))


def check(root: Path = ROOT) -> list[Drift]:
    """Every lesson block, in every chapter, whose code differs from the package's."""
    return [drift for lesson in lessons(root)
            for drift in drifts(lesson.read_text(encoding="utf-8"), lesson.relative_to(root), root)]


def write(root: Path = ROOT) -> list[Path]:
    """Rewrite every lesson's marked blocks from the package; returns the lessons that changed."""
    changed = []
    for lesson in lessons(root):
        text = lesson.read_text(encoding="utf-8")
        new = sync(text, root)
        if new != text:
            lesson.write_text(new, encoding="utf-8")
            changed.append(lesson)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"], ["--write"]):
        print("usage: python -m minideepseek.lesson_code [--check | --write]", file=sys.stderr)
        return 2
    if args == ["--write"]:
        for lesson in write():
            print(f"rewrote {lesson.relative_to(ROOT)}")
        return 0
    problems = check()
    for problem in problems:
        print(problem)
    if problems:
        print("run: python -m minideepseek.lesson_code --write", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
