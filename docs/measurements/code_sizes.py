"""Classes and functions of a source tree by length, for issue 20's rule of thumb (no class
over ~300 lines, no function over ~60).

    python docs/measurements/code_sizes.py [ROOT] [--top N]

ROOT defaults to ``zcounter``; prints the longest classes and functions (docstrings and
comments included, as a reader meets them) and the counts past 300 / 60 lines.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def sizes(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    classes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                where = f"{path}:{node.lineno} {node.name}"
                (classes if isinstance(node, ast.ClassDef) else functions).append(
                    (length, where))
    return sorted(classes, reverse=True), sorted(functions, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="zcounter")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    classes, functions = sizes(Path(args.root))
    for title, items, bound in (("classes", classes, 300), ("functions", functions, 60)):
        over = sum(1 for n, _ in items if n > bound)
        print(f"{title}: {len(items)}, {over} over {bound} lines")
        for n, where in items[:args.top]:
            print(f"  {n:5d}  {where}")


if __name__ == "__main__":
    main()
