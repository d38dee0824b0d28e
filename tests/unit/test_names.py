"""One name per concept: no class name is defined twice across the client and the runtime packages.

Two classes of one name that mean different things (two ``Lease``, two ``Container``) make every
reading of either side ambiguous; a concept both sides share lives once, in ``protocol/``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "kernel_ext" / "remotecell", ROOT / "runtime" / "remotecell_runtime"]


def test_no_class_name_is_defined_twice():
    where: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    where[node.name].append(str(path.relative_to(ROOT)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, f"class names defined more than once: {twice}"
