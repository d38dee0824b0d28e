"""The schedule view (f.schedule() in a notebook) in a real kernel: next and last run, Pause/Resume, Run now."""

from __future__ import annotations

import remotecell as rc
from kernels import click, shown_views, view_parts


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
