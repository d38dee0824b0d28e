"""The map's progress in a notebook: its rate and ETA fields, and the text a saved notebook shows in its place.

Run through nbclient (a real kernel against the test runtime) with the widget state stored, as a user's
notebook is saved; the rate/ETA wording is checked on its own, without a kernel.
"""

from __future__ import annotations

import re

import nbformat
from nbclient import NotebookClient
from remotecell._progress import Progress


def test_rate_and_eta_read_as_a_user_expects():
    progress = Progress("square.map", total=100)
    progress.started_s -= 10.0  # as if it had run for 10 s
    progress.submitted = 40
    for _ in range(30):
        progress.done += 1
    assert progress.rate_text() == "3.0/s"
    assert progress.eta_text() == "ETA 23 s"  # 70 left at 3 a second
    assert Progress("f.map").eta_text() == "ETA -"  # no total, no rate: no guess
    progress.close()
    assert re.fullmatch(r"took 10\.\d s", progress.eta_text())
    assert progress.counts() == "30/100 done, 10 in flight"


def _run(tmp_path, cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def test_the_bar_shows_rate_and_eta_and_a_saved_notebook_reads_the_final_counts(runtime, tmp_path):
    nb = _run(tmp_path, [
        "%load_ext remotecell\nimport remotecell as rc\napp = rc.App('progress-fields')",
        "@app.function(max_containers=2)\ndef tick(i):\n    import time\n    time.sleep(0.1)\n    if i == 5:\n"
        "        raise ValueError(i)\n    return i",
        "assert len(list(tick.map(range(12), return_exceptions=True))) == 12",
    ])
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    by_class = {c: m["state"] for m in state.values() for c in m["state"].get("_dom_classes", [])}
    assert re.fullmatch(r"\d+(\.\d)?/s", by_class["remotecell-progress-rate"]["value"]), by_class
    assert float(by_class["remotecell-progress-rate"]["value"][:-2]) > 0
    assert re.fullmatch(r"took \d+\.\d s", by_class["remotecell-progress-eta"]["value"])
    [bar] = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert bar["value"] == bar["max"] == 12 and bar["bar_style"] == "danger"

    [out] = [o for o in nb.cells[2].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    text, page = out["data"]["text/plain"], out["data"]["text/html"]
    assert re.fullmatch(r"tick\.map: 11/12 done, 1 failed, 0 in flight, \d+/s, \d+\.\d s", text), text
    assert "<b>tick.map</b>" in page and "11/12 done, 1 failed, 0 in flight" in page
    assert 'style="display:block;width:100%' in page  # the static bar: all finished, in red (one failed)
    assert "#c62828" in page


def test_without_the_widget_state_nbconvert_shows_the_text_not_the_widget(runtime, tmp_path):
    from nbconvert import HTMLExporter, MarkdownExporter

    nb = _run(tmp_path, [
        "%load_ext remotecell\nimport remotecell as rc\napp = rc.App('progress-saved')",
        "@app.function(max_containers=2)\ndef nap(i):\n    import time\n    time.sleep(0.1)\n    return i",
        "assert list(nap.map(range(10))) == list(range(10))",
    ])
    nb.metadata.pop("widgets")  # as GitHub or an nbconvert without the widget manager see it
    markdown, _ = MarkdownExporter().from_notebook_node(nb)
    assert "nap.map" in markdown and "10/10 done, 0 in flight" in markdown, markdown
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert "<b>nap.map</b>" in page and "10/10 done, 0 in flight" in page
    assert "HBox(children" not in markdown + page
