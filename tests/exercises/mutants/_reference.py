"""What the mutants start from: a chapter's reference solution, with one function then replaced.

A mutant module calls ``use_solution("NN", globals())`` to take every name of
``chapters/NN_slug/solution.py``, then redefines the function it gets wrong. The reference's
own functions keep calling the reference's versions.
"""

import importlib.util
from pathlib import Path

CHAPTERS = Path(__file__).resolve().parents[3] / "chapters"


def use_solution(chapter: str, namespace: dict):
    (path,) = CHAPTERS.glob(f"{chapter}_*/solution.py")
    spec = importlib.util.spec_from_file_location(f"mutant_base_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace.update({name: value for name, value in vars(module).items() if not name.startswith("__")})
    return module
