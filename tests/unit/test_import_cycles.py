"""No import cycles in the runtime package nor in the client package (a plain unit test: no runtime, no kernel).

The import graph of a package is read from the ``ast`` of each of its modules:
every import statement, at module level, under ``if TYPE_CHECKING:`` (a cycle
there still ties the modules' types together) and inside functions (a late
import that closes a loop is still a loop; deferring a heavy or optional
dependency is fine as long as it points one way).  ``from P import y`` counts as importing the module
``P.y`` when there is one, else ``P`` (``y`` is defined there).  A package is one node, its
``__init__``; the implicit import of a module's parent packages is not an edge
(a package's ``__init__`` importing its own modules is no cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "remotecell_runtime": ROOT / "runtime" / "remotecell_runtime",
    "remotecell": ROOT / "kernel_ext" / "remotecell",
}


def _modules(name: str, folder: Path) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    found = {}
    for path in folder.rglob("*.py"):
        parts = [name, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, wherever it stands."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package's modules that ``node`` (in ``module``) imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # A name that is a submodule is that module; any other name is an attribute of ``base``.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    targets = set()
    for name in names:
        while name and name not in known:  # `import a.b.c` of a non-module attribute: its nearest module
            name = name.rpartition(".")[0]
        if name and name != module:
            targets.add(name)
    return targets


def import_graph(package: str) -> dict[str, set[str]]:
    files = _modules(package, PACKAGES[package])
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        graph[module] = set()
        for node in _imports(tree):
            graph[module] |= _targets(module, is_package, node, known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _report(package: str) -> str:
    graph = import_graph(package)
    lines = []
    for group in cycles(graph):
        edges = [f"{a} -> {b}" for a in group for b in sorted(graph[a]) if b in group]
        lines.append(f"cycle among {', '.join(group)}: " + "; ".join(edges))
    return "\n".join(lines)


def test_the_cycle_finder_sees_a_cycle_and_only_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_has_the_edges_it_should():
    graph = import_graph("remotecell_runtime")
    assert "remotecell_runtime.protocol.framing" in graph["remotecell_runtime.daemon"]
    assert "remotecell_runtime.services" in graph["remotecell_runtime.daemon"]


def test_the_runtime_has_no_import_cycles():
    report = _report("remotecell_runtime")
    assert not report, report


def test_no_service_imports_the_daemon():
    graph = import_graph("remotecell_runtime")
    importers = sorted(m for m, targets in graph.items() if "remotecell_runtime.daemon" in targets)
    # `python -m remotecell_runtime serve` starts the daemon: the one module above it
    assert importers == ["remotecell_runtime.__main__"], (
        f"{importers} import the daemon: give them what they need through services.base.Host")


def test_the_client_has_no_import_cycles():
    report = _report("remotecell")
    assert not report, report
