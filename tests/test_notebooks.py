"""The example notebooks run in a real Jupyter kernel (nbclient) against the test runtime."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(runtime, path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on a failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    if path.stem == "quickstart":
        assert "squaring 7 in a container" in _text(code[0]) and "49" in _text(code[0])
        assert "(0.0, 1.0, dtype('float32'))" in _text(code[1])
        assert "[0, 1, 4, 9, 16]" in _text(code[2])
        assert "caught: ZeroDivisionError('division by zero')" in _text(code[3])
        assert "return a / b" in _text(code[3])  # the remote traceback, with the cell's source
        assert "square: " in _text(code[4]) and "idle" in _text(code[4])  # rc.status()
