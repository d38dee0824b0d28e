"""``f.batch_stats()`` as a view: the live widget in a real Jupyter kernel against the test runtime (read
from the kernel's comm messages), the text view without ipywidgets, the report outside a kernel, and a
plain script without IPython at all."""

from __future__ import annotations

import json
import pickle
import re

import pytest
from conftest import run_script
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output
from kernels import VIEW, shown_views, view_parts
from remotecell.batching import BatchStats, size_rows
from remotecell.widgets.batching import QUIET_EVERY_S, StatsWatch, sizes_html

FULL = 4  # max_batch_size of the kernel's function; its wait is long, so every batch closes full

STATS = {"max_batch_size": 64, "wait_ms": 5, "batches": 63, "items": 2000, "mean_batch_size": 2000 / 63,
         "sizes": {16: 1, 32: 62}, "closed": {"full": 62, "waited": 1}, "wait_ms_mean": 4.1,
         "wait_ms_p99": 9.8, "items_per_s": 10230.5, "recent": []}


# -- the report, no runtime -------------------------------------------------------------------


def test_the_report_says_counts_rate_mean_closes_waits_and_sizes():
    stats = BatchStats(STATS, function="embed")
    assert repr(stats).splitlines() == [
        "embed: 63 batches, 2,000 items, 10,230.5 items/s",
        "  mean batch 31.7 of max_batch_size 64 (wait_ms 5); closed: 62 full, 1 waited",
        "  queue wait: mean 4.1 ms, p99 9.8 ms",
        "  batch sizes:",
        "    16 | █                         1",
        "    32 | ████████████████████████ 62",
    ]
    empty = BatchStats({"max_batch_size": 8, "wait_ms": 10, "batches": 0, "items": 0, "sizes": {}}, "f")
    assert repr(empty) == "f: no batches yet; max_batch_size 8 (wait_ms 10)"


def test_it_stays_a_dict_and_a_pickled_copy_is_a_snapshot():
    stats = BatchStats(STATS, function="embed", fetch=lambda: BatchStats({}))
    assert stats == STATS and stats["sizes"][32] == 62 and isinstance(stats, dict)
    assert json.loads(json.dumps(stats))["batches"] == 63
    copy = pickle.loads(pickle.dumps(stats))
    assert copy == stats and copy.function == "embed" and copy.fetch is None


def test_many_sizes_are_grouped_into_ranges_up_to_max_batch_size():
    assert size_rows({s: 1 for s in range(1, 65)}, 64, rows=4) == [
        ("1-16", 16), ("17-32", 16), ("33-48", 16), ("49-64", 16)]
    # empty ranges stay (the shape shows); the last range ends at max_batch_size
    assert size_rows({1: 5, 2: 1, 3: 1, 100: 7}, 100, rows=3) == [("1-34", 7), ("35-68", 0), ("69-100", 7)]
    assert size_rows({}, 8) == []
    html = sizes_html([("16", 1), ("32", 62)])
    assert html.count("<tr>") == 3 and "width:3px" in html and "width:160px\"></div>" in html
    assert sizes_html([]) == "<i>no batches yet</i>"


def test_the_watch_asks_each_tick_while_batches_come_and_seldom_once_quiet():
    now = [0.0]
    asked: list[float] = []
    batches = iter([1, 2, 2, 2, 2, 3, 3])

    def fetch() -> BatchStats:
        asked.append(now[0])
        n = next(batches)
        if n == 2 and len(asked) == 3:
            raise ConnectionError("runtime restarting")
        return BatchStats({"batches": n}, "f", fetch)

    watch = StatsWatch(BatchStats({"batches": 0}, "f", fetch), clock=lambda: now[0])
    for t in (0.5, 1.0, 1.5, 11.0, 12.0, 16.0, 16.5, 21.0, 21.5):
        now[0] = t
        snap = watch.refresh()
        if t == 1.5:
            assert "cannot ask the runtime now (ConnectionError: runtime restarting)" in snap.problem
            assert snap.stats["batches"] == 2  # the last answer stays shown
    # every tick until 10 s passed without a new batch (the last came at 1.0), then every QUIET_EVERY_S;
    # the new batch seen at 21.0 makes it ask at every tick again
    assert QUIET_EVERY_S == 5.0
    assert asked == [0.5, 1.0, 1.5, 11.0, 16.0, 21.0, 21.5]
    assert snap.stats["batches"] == 3 and snap.problem == "" and not snap.final


# -- the widget in a real kernel --------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(kernel):
    """The conftest kernel, with a batched function ``tens`` and ``calls(n)``, n concurrent calls of it."""
    kernel.run("import asyncio\n"
               f"@app.function(max_containers=1)\n@rc.batched(max_batch_size={FULL}, wait_ms=60_000)\n"
               "def tens(xs):\n    return [10 * x for x in xs]\n"
               "async def calls(n):\n    return await asyncio.gather(*(tens.remote.aio(i) for i in range(n)))")
    return kernel


def test_the_widget_shows_the_stats_and_follows_new_batches_until_closed(kernel):
    assert kernel.value(f"await calls({2 * FULL})") == str([10 * i for i in range(2 * FULL)])
    shown = kernel.start("tens.batch_stats()")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [view] = shown_views(kernel, shown)
    [bundle] = [o["content"]["data"] for o in kernel.outputs(shown) if VIEW in o["content"]["data"]]
    assert bundle["text/plain"].startswith("tens: 2 batches, 8 items")  # where widgets are not rendered
    parts = view_parts(kernel, view)
    assert "remotecell-batching" in parts
    assert parts["remotecell-batching-title"]["value"] == "<b>tens</b> batching:"
    assert parts["remotecell-batching-summary"]["value"].startswith("2 batches, 8 items, ")
    assert parts["remotecell-batching-fill"]["value"] == parts["remotecell-batching-fill"]["max"] == FULL
    assert parts["remotecell-batching-mean"]["value"] == f"4.0 of max_batch_size {FULL} (wait_ms 60000)"
    assert parts["remotecell-batching-closes"]["value"].startswith("closed: 2 full, 0 waited; queue wait: mean ")
    assert ">4</td>" in parts["remotecell-batching-sizes"]["value"]

    kernel.run(f"await calls({FULL})")  # one more batch, in a later cell: the shown view follows
    kernel.pump(lambda: view_parts(kernel, view)["remotecell-batching-summary"]["value"].startswith(
        "3 batches, 12 items, "), what="the widget to count the new batch")
    parts = view_parts(kernel, view)
    assert parts["remotecell-batching-closes"]["value"].startswith("closed: 3 full, 0 waited")
    assert ">3</td></tr></table>" in parts["remotecell-batching-sizes"]["value"]  # 3 batches of size 4
    assert "items/s" in parts["remotecell-batching-summary"]["value"] and "- items/s" not in \
        parts["remotecell-batching-summary"]["value"]  # two batches within 60 s give a rate

    # closing the widget (as the frontend or close_all does) stops its polling
    assert kernel.value("from remotecell.widgets.poller import poller\npoller().idle") == "False"
    kernel.run("import ipywidgets\nipywidgets.Widget.close_all()")
    kernel.pump(lambda: kernel.value("poller().idle") == "True", what="the poller to drop the closed view")


def test_without_ipywidgets_the_view_is_the_report_updated_in_place(kernel):
    shown = kernel.start("import sys\nsaved = sys.modules.get('ipywidgets')\nsys.modules['ipywidgets'] = None\n"
                         "try:\n    plain = tens.batch_stats()\n    display(plain)\n"
                         "finally:\n    sys.modules['ipywidgets'] = saved")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [first] = [o["content"] for o in kernel.outputs(shown) if o["msg_type"] == "display_data"]
    batches = int(kernel.value("plain['batches']"))
    assert VIEW not in first["data"] and first["data"]["text/plain"].startswith(f"tens: {batches} batches, ")
    display_id = first["transient"]["display_id"]

    def latest() -> str:
        updates = [m["content"]["data"]["text/plain"] for m in kernel.messages
                   if m["msg_type"] == "update_display_data" and m["content"]["transient"]["display_id"] == display_id]
        return updates[-1] if updates else ""

    kernel.run(f"await calls({FULL})")
    kernel.pump(lambda: latest().startswith(f"tens: {batches + 1} batches, "), what="the text view to update")
    assert "  batch sizes:\n    4 | ████████████████████████" in latest()


def test_a_view_of_a_stopped_app_says_so_and_does_not_start_it_again(kernel):
    shown = kernel.start("brief = rc.App('brief')\nwith brief.run():\n    @brief.function()\n"
                         "    @rc.batched(max_batch_size=2, wait_ms=60_000)\n    def twos(xs):\n        return xs\n"
                         "    await asyncio.gather(twos.remote.aio(1), twos.remote.aio(2))\n"
                         "    display(twos.batch_stats())")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [view] = shown_views(kernel, shown)
    assert view_parts(kernel, view)["remotecell-batching-summary"]["value"].startswith("1 batch, 2 items, ")
    kernel.pump(lambda: "is not running here" in view_parts(kernel, view)["remotecell-batching-summary"]["value"],
                what="the view to say the app stopped")
    assert view_parts(kernel, view)["remotecell-batching-summary"]["value"].startswith("1 batch, 2 items, ")
    assert kernel.value("brief.app_id is None") == "True"  # looking did not start it


# -- outside a kernel -------------------------------------------------------------------------


def test_outside_a_kernel_it_shows_the_report(runtime):
    shell = start_ipython() or get_ipython()
    shell.run_cell("import asyncio\nimport remotecell as rc\napp = rc.App('batch-stats-terminal')\n"
                   "@app.function(max_containers=1)\n@rc.batched(max_batch_size=3, wait_ms=60_000)\n"
                   "def plus(xs):\n    return [x + 1 for x in xs]")
    assert shell.run_cell("async def three():\n    return await asyncio.gather(*(plus.remote.aio(i) "
                          "for i in range(3)))\nasyncio.run(three())").result == [1, 2, 3]
    with capture_output() as out:
        result = shell.run_cell("stats = plus.batch_stats()\nstats")
    assert result.success and [o.data for o in out.outputs] == [{"text/plain": repr(shell.user_ns["stats"])}]
    lines = repr(shell.user_ns["stats"]).splitlines()
    assert lines[0] == "plus: 1 batch, 3 items, - items/s"  # one batch: no rate yet
    assert lines[1] == "  mean batch 3.0 of max_batch_size 3 (wait_ms 60000); closed: 1 full, 0 waited"
    assert lines[-1] == "    3 | ████████████████████████ 1"


def test_batch_stats_work_without_ipython_or_ipywidgets(runtime, tmp_path):
    done = run_script("""
import asyncio, sys
sys.modules["IPython"] = sys.modules["ipywidgets"] = None   # as if not installed
import remotecell as rc
app = rc.App("plain-batches")

@app.function()
@rc.batched(max_batch_size=2, wait_ms=60_000)
def pair(xs):
    return [len(xs)] * len(xs)

async def main():
    return await asyncio.gather(pair.remote.aio(1), pair.remote.aio(2))

if __name__ == "__main__":
    assert asyncio.run(main()) == [2, 2]
    stats = pair.batch_stats()
    print(stats["batches"], stats["sizes"])
    print(stats)
    assert "IPython" not in [m for m in sys.modules if sys.modules[m] is not None]
""", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1 {2: 1}" and lines[1] == "pair: 1 batch, 2 items, - items/s"


def test_the_widget_plots_batch_sizes_over_time_and_reads_as_text_where_not_rendered(kernel):
    kernel.run(f"await calls({FULL})")
    shown = kernel.start("tens.batch_stats()")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [view] = shown_views(kernel, shown)
    batches = int(kernel.value("tens.batch_stats()['batches']"))
    chart = view_parts(kernel, view)["remotecell-batching-timeline"]["value"]
    assert chart.startswith('<svg class="remotecell-batching-chart"')
    assert chart.count("<circle") == min(batches, 50)  # a dot per recent batch (the runtime keeps 50)
    assert chart.count(f'fill="#1565c0"><title>{FULL} (full), ') == min(batches, 50)  # all closed full
    assert ">now</text>" in chart and f">{FULL}</text>" in chart  # the axis and the max_batch_size line
    [bundle] = [o["content"]["data"] for o in kernel.outputs(shown) if VIEW in o["content"]["data"]]
    assert f"  recent batch sizes, oldest first: {'█' * min(batches, 50)}" in bundle["text/plain"]
    page = bundle["text/html"]
    assert page.startswith('<div class="remotecell-batching">tens: ') and '<svg class="remotecell-batching-chart"' \
        in page and "<table" in page


def test_the_chart_and_the_sparkline_follow_size_and_age():
    from remotecell.batching import sparkline
    from remotecell.widgets.batching import CHART_W, timeline_svg

    recent = [{"size": 1, "reason": "waited", "closed_s_ago": 10.0}, {"size": 8, "reason": "full", "closed_s_ago": 0.0}]
    chart = timeline_svg(recent, 8)
    old, new = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', chart)
    assert float(old[0]) < float(new[0]) == CHART_W - 6  # the newest at the right edge: now
    assert float(old[1]) > float(new[1])  # the smaller batch lower
    assert 'fill="#ef6c00"><title>1 (waited), 10.0 s ago' in chart and ">10 s ago</text>" in chart
    assert timeline_svg([], 8) == "<i>no recent batches to plot</i>"
    assert sparkline({"max_batch_size": 8, "recent": recent}) == "▁█"
    assert sparkline({"max_batch_size": 8, "recent": []}) == ""
