"""Retry only the failed inputs of a map in a real kernel: ``f.retry_failed(results)`` and the widget's button."""

from __future__ import annotations

from kernels import click, shown_views, view_parts

FLAKY = """
import pathlib
@app.function(max_containers=2)
def flaky(x, folder):
    tries = pathlib.Path(folder, str(x))
    tries.write_text(tries.read_text() + "." if tries.exists() else ".")
    if x in (3, 6) and len(tries.read_text()) == 1:  # 3 and 6 fail the first time only
        raise ValueError(f"bad {x}")
    return x * 10
"""


def _mapped_view(kernel, tmp_path, count: int):
    """``flaky.map(range(count), return_exceptions=True)`` with its widget shown, run to its end: a reader of the
    widget's parts by CSS class (``part("retry")["description"]``)."""
    shown = kernel.start(f"results = list(flaky.map(range({count}), kwargs={{'folder': {str(tmp_path)!r}}}, "
                         "return_exceptions=True, progress=True))")
    kernel.pump(lambda: kernel.finished(shown), what="the map to finish")
    [view] = shown_views(kernel, shown)
    return lambda css: view_parts(kernel, view)[f"remotecell-progress-{css}"]


def test_retry_failed_merges_the_rerun_in_order(kernel, tmp_path):
    kernel.run(FLAKY)
    kernel.run(f"results = list(flaky.map(range(8), kwargs={{'folder': {str(tmp_path)!r}}}, "
               "return_exceptions=True))")
    assert kernel.value("[i for i, r in enumerate(results) if isinstance(r, Exception)]") == "[3, 6]"
    assert kernel.value("flaky.retry_failed(results)") == "[0, 10, 20, 30, 40, 50, 60, 70]"
    assert sorted(len(p.read_text()) for p in tmp_path.iterdir()) == [1] * 6 + [2, 2]


def test_the_map_widgets_retry_button_reruns_the_failures(kernel, tmp_path):
    kernel.run(FLAKY)
    part = _mapped_view(kernel, tmp_path, 8)

    kernel.pump(lambda: part("retry")["description"] == "Retry 2 failed", what="the retry button")
    assert "2 failed" in part("counts")["value"] and part("bar")["bar_style"] == "danger"
    click(kernel, part("retry")["model_id"])
    kernel.pump(lambda: "retried 2: 2 succeeded, 0 failed again" in part("note")["value"],
                what="the rerun's outcome in the widget")
    assert part("bar")["bar_style"] == "success" and "failed" not in part("counts")["value"]
    # the button's outcomes are merged without running the inputs again
    assert kernel.value("flaky.retry_failed(results)") == "[0, 10, 20, 30, 40, 50, 60, 70]"
    assert sorted(len(p.read_text()) for p in tmp_path.iterdir()) == [1] * 6 + [2, 2]


def test_the_widget_keeps_at_most_failures_kept_and_its_button_says_so(kernel, tmp_path):
    """A map that fails often: the view keeps the first FAILURES_KEPT failures (not all), the button reruns those,
    and retry_failed(results) reruns every one."""
    kernel.run(FLAKY.replace("x in (3, 6)", "x % 2"))  # every odd input fails the first time
    kernel.run("import remotecell._progress as _p\n_p.FAILURES_KEPT = 5")
    part = _mapped_view(kernel, tmp_path, 24)

    kernel.pump(lambda: part("retry")["description"] == "Retry first 5 of 12 failed", what="the capped button")
    click(kernel, part("retry")["model_id"])
    kernel.pump(lambda: "retried 5: 5 succeeded, 0 failed again" in part("note")["value"],
                what="the rerun of the 5 kept failures")
    assert "7 failed" in part("counts")["value"]
    tries = sorted(len(p.read_text()) for p in tmp_path.iterdir())
    assert tries == [1] * 19 + [2] * 5  # the button reran the 5 it kept, no more
    merged = "[x * 10 for x in range(24)]"
    assert kernel.value(f"flaky.retry_failed(results) == {merged}") == "True"  # the other 7 ran now
    assert sorted(len(p.read_text()) for p in tmp_path.iterdir()) == [1] * 12 + [2] * 12
    kernel.run("_p.FAILURES_KEPT = 1000")  # the module's kernel is shared: as it was
