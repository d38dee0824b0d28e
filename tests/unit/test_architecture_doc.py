"""docs/architecture.md's module tables name every module of both packages, and only modules that exist.

The rule: each table row starts with a path relative to its package (`app.py`,
`services/jobs.py`); a row naming a folder (`server_ext/`) covers every module in
it; a subpackage's `__init__.py` is covered by any row inside that folder (it only
re-exports), the packages' own `__init__.py` need rows of their own.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = {"kernel_ext/remotecell/": ROOT / "kernel_ext" / "remotecell",
            "runtime/remotecell_runtime/": ROOT / "runtime" / "remotecell_runtime"}


def _rows() -> dict[str, set[str]]:
    """The first cells of each package's module table, by the package the table is about."""
    rows: dict[str, set[str]] = {name: set() for name in PACKAGES}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^(Client|Runtime) side, `([^`]+)`:", line)
        if heading:
            current = heading.group(2)
            continue
        if line.startswith("## "):
            current = None
        cell = re.match(r"^\| `([^`]+)` \|", line)
        if current in rows and cell:
            rows[current].add(cell.group(1))
    return rows


def _modules(package: Path) -> set[str]:
    return {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}


def test_every_module_has_a_row_and_every_row_a_module():
    rows = _rows()
    for name, package in PACKAGES.items():
        named = rows[name]
        assert named, f"no module table for {name} in {DOC}"
        modules = _modules(package)
        folders = {r for r in named if r.endswith("/")}

        def covered(module: str, named: set[str] = named, folders: set[str] = folders) -> bool:
            if module in named or any(module.startswith(f) for f in folders):
                return True
            folder = module.rpartition("/")[0]
            return module.endswith("/__init__.py") and any(r.startswith(folder + "/") for r in named)

        missing = sorted(m for m in modules if not covered(m))
        assert not missing, f"docs/architecture.md has no row for these modules of {name}: {missing}"
        gone = sorted(r for r in named - folders if r not in modules)
        gone += sorted(f for f in folders if not (package / f).is_dir())
        assert not gone, f"docs/architecture.md names modules of {name} that do not exist: {gone}"


def test_no_merge_conflict_markers_in_the_docs():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
    marked = [f"{path.relative_to(ROOT)}:{n}" for path in docs
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="]
    assert not marked, f"merge conflict markers left in: {marked}"
