"""``python -m minideepseek.plots [chapter ...]``: redraw the chapters' figures/ PNGs.

A chapter is named by its number or folder (``02`` or ``02_rope_yarn``); no name means all.
"""

import argparse
import sys

from . import figure_modules, save_figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minideepseek.plots", description=__doc__)
    parser.add_argument("chapters", nargs="*", help="chapter numbers or folder names (default: every chapter)")
    args = parser.parse_args(argv)

    modules = figure_modules()
    if args.chapters:
        modules = [m for m in modules if any(m.CHAPTER.startswith(name) for name in args.chapters)]
        if not modules:
            known = sorted({m.CHAPTER for m in figure_modules()})
            sys.exit(f"no figure module for {args.chapters}; chapters with figures: {known}")
    for module in modules:
        for path in save_figures(module):
            print(path)


if __name__ == "__main__":
    main()
