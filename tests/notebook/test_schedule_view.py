"""The schedule view (f.schedule() in a notebook) in a real kernel: next and last run, Pause/Resume, Run now."""

from __future__ import annotations

import re

import remotecell as rc
from kernels import VIEW, click, shown_views, view_parts


def test_the_notebook_view_shows_next_and_last_run_and_its_buttons_pause_resume_and_run(scheduled, kernel):
    shown = kernel.start(f"import remotecell as rc\ns = rc.Function.from_name({scheduled!r}, 'tick').schedule()\ns")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [view] = shown_views(kernel, shown)

    def part(css: str) -> dict:
        return view_parts(kernel, view)[f"remotecell-schedule-{css}"]

    assert "<b>tick</b> in " in part("title")["value"] and "every 1 s" in part("title")["value"]
    kernel.pump(lambda: "(schedule)" in part("last")["value"], what="a scheduled run in the view")
    assert part("next")["value"].startswith("next ")
    click(kernel, part("toggle")["model_id"])
    kernel.pump(lambda: part("next")["value"] == "paused" and part("toggle")["description"] == "Resume",
                what="the view to say paused")
    assert rc.Function.from_name(scheduled, "tick").schedule().paused
    click(kernel, part("run")["model_id"])
    kernel.pump(lambda: "(run_now)" in part("last")["value"] and ">succeeded</b>" in part("last")["value"],
                what="the run started by the button to succeed")
    click(kernel, part("toggle")["model_id"])
    kernel.pump(lambda: part("next")["value"].startswith("next ") and not part("toggle")["disabled"],
                what="the view to say resumed")
    assert not rc.Function.from_name(scheduled, "tick").schedule().paused


def test_the_view_draws_last_and_next_runs_on_a_timeline_and_reads_as_text_where_not_rendered(scheduled, kernel):
    shown = kernel.start(f"import remotecell as rc\ns = rc.Function.from_name({scheduled!r}, 'tick').schedule()\ns")
    kernel.pump(lambda: kernel.finished(shown), what="the cell to finish")
    [view] = shown_views(kernel, shown)

    def timeline() -> str:
        return view_parts(kernel, view)["remotecell-schedule-timeline"]["value"]

    kernel.pump(lambda: "last run succeeded" in timeline(), what="a finished run on the timeline")
    chart = timeline()
    assert chart.startswith('<svg class="remotecell-schedule-chart"') and ">now</text>" in chart
    assert re.search(r">last \d+ s ago</text>", chart) and re.search(r">next in \d+ s</text>", chart), chart
    assert 'fill="green"' in chart  # the last run's dot in its state's color
    # where widgets are not rendered: the schedule's line, and a static copy of the timeline
    [bundle] = [o["content"]["data"] for o in kernel.outputs(shown) if VIEW in o["content"].get("data", {})]
    assert bundle["text/plain"].startswith("tick in ") and "every 1 s" in bundle["text/plain"]
    assert bundle["text/html"].startswith('<div class="remotecell-schedule">tick in ')
    assert '<svg class="remotecell-schedule-chart"' in bundle["text/html"]


def test_a_paused_schedule_has_no_next_run_on_its_timeline():
    from remotecell.schedules import Schedule
    from remotecell.widgets.schedules import timeline_svg

    state = {"paused": True, "next_at": None, "description": "every 60 s",
             "last": {"call_id": "fc-1", "at": 1000.0, "trigger": "schedule", "state": "failed"},
             "fires": [{"slot": 940.0, "outcome": "spawned"}, {"slot": 1000.0, "outcome": "skipped: still running"}]}
    chart = timeline_svg(Schedule("etl", "nightly", state), now=1030.0)
    assert "next in" not in chart and "<title>paused</title>" in chart
    assert ">last 30 s ago</text>" in chart and 'fill="#c62828"' in chart  # failed: red
    assert chart.count("<line") == 1 + 2 + 1  # the axis, a tick per slot, now
    assert 'stroke="#2e7d32"' in chart and 'stroke="gray" stroke-width="1.2"' in chart  # spawned; skipped


def test_now_has_a_row_of_its_own_when_the_next_run_is_near():
    """A 2 s period: now sits beside the next run, whose label ("next in 1 s") must not overprint it."""
    from remotecell.schedules import Schedule
    from remotecell.widgets.schedules import TIMELINE_H, timeline_svg

    fires = [{"slot": 1000.0 + 2 * i, "outcome": "spawned"} for i in range(5)]
    state = {"paused": False, "next_at": 1010.0, "description": "every 2 s", "fires": fires,
             "last": {"call_id": "fc-1", "at": 1008.0, "trigger": "schedule", "state": "succeeded"}}
    chart = timeline_svg(Schedule("etl", "tick", state), now=1009.1)
    rows = {label: float(y) for y, label in re.findall(r'<text x="[\d.]+" y="([\d.]+)"[^>]*>(now|next in|last)', chart)}
    assert set(rows) == {"now", "next in", "last"}, chart
    assert rows["now"] < rows["next in"] == rows["last"] <= TIMELINE_H, rows
