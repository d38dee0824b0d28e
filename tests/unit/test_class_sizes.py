"""No class on either side holds two concepts: at most 25 methods and 350 lines each (the project's guide)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "kernel_ext" / "remotecell", ROOT / "runtime" / "remotecell_runtime"]
MAX_METHODS = 25
MAX_LINES = 350


def _classes() -> list[tuple[str, int, int]]:
    found = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    found.append((f"{path.relative_to(ROOT)}:{node.name}", len(methods), lines))
    return found


def test_the_walk_sees_the_classes_it_judges():
    names = {name.rsplit(":", 1)[1] for name, _, _ in _classes()}
    assert {"Function", "Pool", "Daemon", "Connection"} <= names


def test_no_class_has_more_than_25_methods_or_350_lines():
    too_big = [f"{name} ({methods} methods, {lines} lines)" for name, methods, lines in _classes()
               if methods > MAX_METHODS or lines > MAX_LINES]
    assert not too_big, f"split these by concern (at most {MAX_METHODS} methods, {MAX_LINES} lines): {too_big}"
