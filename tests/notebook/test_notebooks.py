"""The example notebooks run in a real Jupyter kernel (nbclient) against the test runtime."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(runtime, path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on a failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    if path.stem == "quickstart":
        _check_quickstart(nb, code)
    if path.stem == "batched_inference":
        _check_batched_inference(nb, code)
    if path.stem == "post_mortem_and_retry":
        _check_post_mortem_and_retry(code)


def _check_post_mortem_and_retry(code) -> None:
    assert "['ConnectionError', 'ConnectionError', 'ConnectionError']" in _text(code[1])
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121]" in _text(code[2])  # merged in order
    debugged = _text(code[3])
    assert "-> return total / (x - 21)" in debugged and "(21, 42)" in debugged  # the frame that raised
    assert "-> return inner(y + 20)" in debugged and "(Pdb) p y\n1\n" in debugged  # up


def _check_quickstart(nb, code) -> None:
    assert "squaring 7 in a container" in _text(code[1]) and "49" in _text(code[1])
    assert "(0.0, 1.0, dtype('float32'))" in _text(code[2])
    assert "[0, 1, 4, 9, 16]" in _text(code[3])
    bars = [m["state"] for m in nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
            if m["model_name"] == "IntProgressModel"]
    assert [(b["value"], b["max"], b["bar_style"]) for b in bars] == [(32, 32, "success")]  # the map's progress
    _check_spawn(nb, code)
    assert "in the session, pid" in _text(code[8]) and "150" in _text(code[8])  # %%remote, with `scale` pushed
    assert any("image/png" in o.get("data", {}) for o in code[9].outputs)  # plt.show() in the session
    assert "[0, 10, 20, 30, 40, 50, 60]" in _text(code[10])  # --pull
    assert "caught: ZeroDivisionError('division by zero')" in _text(code[12])
    assert "return a / b" in _text(code[12])  # the remote traceback, with the cell's source
    error = next(o for o in code[13].outputs if o["output_type"] == "error")
    assert error["ename"] == "ZeroDivisionError" and "return a / b" in "\n".join(error["traceback"])
    assert "<table>" in code[14].outputs[0]["data"]["text/html"]  # rc.status() as HTML
    assert "square: " in _text(code[14]) and "idle" in _text(code[14])


def _check_spawn(nb, code) -> None:
    """The spawn handle shows as a widget in its cell; what the call prints lands in no cell.

    Its final state is not checked here: nbclient keeps only the comm messages that
    arrive while a cell runs (tests/test_call_views.py follows the widget to the end).
    """
    [view] = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in code[5].outputs
              if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert "remotecell-call" in states[view]["state"]["_dom_classes"]
    assert "144" in _text(code[6])  # call.get()
    assert not any("squaring 12" in _text(c) for c in code)  # the call's output is in its logs, not in a cell


def _check_batched_inference(nb, code) -> None:
    assert "(same as unbatched: " in _text(code[0])
    assert "same predictions: True" in _text(code[1]) and "batching: " in _text(code[1])
    assert "'closed': {'full': " in _text(code[2]) and "queue wait: mean" in _text(code[2])
    # batch_stats() as the last expression: the batching widget, starting from the numbers it returned
    [view] = [o["data"] for o in code[3].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert view["text/plain"].startswith("Classifier.predict: ")  # its stand-in where widgets are not rendered
    states = [m["state"] for m in nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()]
    [summary] = [s["value"] for s in states if "remotecell-batching-summary" in s.get("_dom_classes", [])]
    assert " batches, 1,001 items, " in summary  # one call, then 500 callers twice
