"""The notebook view of a schedule: next run, last result, Pause/Resume and Run now.

``f.schedule()`` as a cell's last expression shows what the schedule fires
(``every 60 s``, ``cron '0 3 * * *' (Europe/Berlin)``), its next run (or
paused), its last run (call id, trigger, state), a timeline of them (the recent
slots as ticks, the last run as a dot in its state's color, now, and the next
run as a ring) and the buttons.  Where widgets are not rendered (nbconvert,
GitHub) the output is the schedule's text and a static copy of the timeline.  A button only
flags what to do: the poller thread (``widgets.poller``) sends it with its next
refresh, so a click never blocks the kernel.  The view stays live while shown;
it ends when the schedule is gone (its app stopped).  Without ipywidgets it is
the schedule's text, updated in place; outside a kernel, the text.

>>> tick.schedule()     # in a notebook: the live view
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _views
from .._progress import _in_kernel
from ..exceptions import NotFoundError
from ..schedules import Schedule
from .calls import _COLORS, BoxSurface, Surface, TextSurface, go_live, have_ipywidgets, html_part, runtime_problem
from .poller import poller

ACTIONS = ("pause", "resume", "run_now")


@dataclass
class ScheduleSnapshot:
    """A schedule as last heard, and why it could not be asked (``problem``) or is gone (``gone``)."""

    schedule: Schedule
    problem: str = ""
    gone: str = ""

    @property
    def final(self) -> bool:
        return bool(self.gone)

    def text(self) -> str:
        if self.gone:
            return f"{self.schedule.function_name} in {self.schedule.app_name}: {self.gone}"
        return self.schedule.text() + (f"; {self.problem}" if self.problem else "")


class ScheduleWatch:
    """Asks the runtime about one schedule; ``act_soon`` makes the next refresh pause, resume or run it first."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.snapshot = ScheduleSnapshot(schedule)
        self._action: str | None = None

    def act_soon(self, action: str) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: one of {', '.join(ACTIONS)}")
        self._action = action

    def refresh(self) -> ScheduleSnapshot:
        snap = self.snapshot
        try:
            if self._action is not None:
                getattr(self.schedule, self._action)()
                self._action = None  # only once it went through: a failed one is sent again next time
            self.schedule.refresh()
            snap.problem = ""
        except NotFoundError as exc:  # its app was stopped or redeployed without the schedule
            snap.gone = str(exc)
        except Exception as exc:
            snap.problem = runtime_problem(exc)
        return snap


class ScheduleWidget(BoxSurface):
    """Title, next run, last run, Pause/Resume and Run now."""

    def __init__(self, snap: ScheduleSnapshot, act: Callable[[str], None]) -> None:
        import ipywidgets as widgets

        self.title = html_part(widgets, "remotecell-schedule-title")
        self.next = html_part(widgets, "remotecell-schedule-next")
        self.last = html_part(widgets, "remotecell-schedule-last")
        self.timeline = html_part(widgets, "remotecell-schedule-timeline")
        self.toggle = self._button(widgets, "Pause", "pause", "remotecell-schedule-toggle", act)
        self.run = self._button(widgets, "Run now", "play", "remotecell-schedule-run", act)
        self.box = widgets.VBox([widgets.HBox([self.title, self.next, self.toggle, self.run]), self.last,
                                 self.timeline])
        self.snap = snap
        self.box.add_class("remotecell-schedule")
        self.render(snap)

    def _button(self, widgets: Any, label: str, icon: str, css_class: str, act: Callable[[str], None]) -> Any:
        button = widgets.Button(description=label, icon=icon, layout=widgets.Layout(width="auto"))
        button.add_class(css_class)

        def clicked(_button: Any) -> None:  # the kernel's main thread: flag it, the poller sends it
            if button is self.run:
                act("run_now")
            else:
                act("resume" if button.description == "Resume" else "pause")
            button.disabled = True  # until the next render shows what happened

        button.on_click(clicked)
        return button

    def render(self, snap: ScheduleSnapshot) -> None:
        s = snap.schedule
        title = f"<b>{html.escape(s.function_name)}</b> in {html.escape(s.app_name)}"
        self.title.value = f"{title}: {html.escape(str(s.state.get('description', '')))}"
        problem = f" ({snap.problem})" if snap.problem else ""
        self.next.value = html.escape((snap.gone or s.upcoming()) + problem)
        self.last.value = _last_html(s.last)
        self.timeline.value = timeline_svg(s, time.time())
        self.toggle.description, self.toggle.icon = ("Resume", "play") if s.paused else ("Pause", "pause")
        self.toggle.disabled = self.run.disabled = snap.final


    def static_html(self, text: str) -> str:
        """The schedule's line and its timeline, as plain HTML (nbconvert, GitHub)."""
        return (f'<div class="remotecell-schedule">{html.escape(text)}<br>'
                f"{timeline_svg(self.snap.schedule, time.time())}</div>")


TIMELINE_W, TIMELINE_H = 360, 40


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else (f"{seconds / 60:.0f} min" if seconds < 7200
                                                      else f"{seconds / 3600:.0f} h")


def timeline_svg(schedule: Schedule, now: float) -> str:
    """The last and next runs on a line through now: recent slots as ticks (gray when skipped), the last run
    as a dot in its state's color, the next one as a ring (none while paused).

    >>> timeline_svg(tick.schedule(), time.time())   # '<svg class="remotecell-schedule-chart" ...'
    """
    last = schedule.last
    fires = [f for f in schedule.fires if f.get("slot") is not None]
    past = [float(f["slot"]) for f in fires] + ([float(last["at"])] if last and last.get("at") else [])
    future = [float(schedule.next_at)] if schedule.next_at is not None and not schedule.paused else []
    start = min([*past, now - 1.0])
    end = max([*future, now + 1.0])
    left, right, mid = 8, TIMELINE_W - 8, 20

    def x(t: float) -> float:
        return left + (right - left) * (t - start) / (end - start)

    ticks = "".join(
        f'<line x1="{x(float(f["slot"])):.1f}" y1="{mid - 5}" x2="{x(float(f["slot"])):.1f}" y2="{mid + 5}" '
        f'stroke="{"#2e7d32" if f.get("outcome") == "spawned" else "gray"}" stroke-width="1.2">'
        f'<title>slot {html.escape(str(f.get("outcome")))}</title></line>' for f in fires)
    text = 'font-size="9" fill="currentColor"'
    # "now" above the line, the last and next runs below it: a short period puts now beside the next run
    marks = [f'<line x1="{x(now):.1f}" y1="{mid - 8}" x2="{x(now):.1f}" y2="{mid + 8}" stroke="currentColor" '
             f'stroke-dasharray="2,2"/><text x="{min(max(x(now), left + 8), right - 8):.1f}" y="{mid - 10}" '
             f'text-anchor="middle" {text}>now</text>']
    if last and last.get("at"):
        color = _COLORS.get(str(last.get("state")), "gray")
        marks.append(f'<circle cx="{x(float(last["at"])):.1f}" cy="{mid}" r="4" fill="{color}">'
                     f'<title>last run {html.escape(str(last.get("state")))}</title></circle>'
                     f'<text x="{left}" y="{TIMELINE_H - 2}" {text}>last {_ago(now - float(last["at"]))} ago</text>')
    if future:
        marks.append(f'<circle cx="{x(future[0]):.1f}" cy="{mid}" r="4" fill="none" stroke="#1565c0" '
                     f'stroke-width="1.5"><title>next run</title></circle>'
                     f'<text x="{right}" y="{TIMELINE_H - 2}" text-anchor="end" {text}>'
                     f"next in {_ago(future[0] - now)}</text>")
    return (f'<svg class="remotecell-schedule-chart" width="{TIMELINE_W}" height="{TIMELINE_H}" '
            f'viewBox="0 0 {TIMELINE_W} {TIMELINE_H}" role="img" xmlns="http://www.w3.org/2000/svg">'
            f"<title>{html.escape(schedule.upcoming())}</title>"
            f'<line x1="{left}" y1="{mid}" x2="{right}" y2="{mid}" stroke="gray" stroke-width="0.5"/>'
            f'{ticks}{"".join(marks)}</svg>')


def _last_html(last: dict[str, Any] | None) -> str:
    if last is None:
        return "not run yet"
    state = str(last.get("state"))
    color = _COLORS.get(state, "gray")
    return (f"last run <code>{html.escape(str(last['call_id']))}</code> ({html.escape(str(last.get('trigger')))}): "
            f'<b style="color:{color}">{html.escape(state)}</b>')


def show(schedule: Schedule) -> None:
    """Display a live view of ``schedule`` (what ``_ipython_display_`` does); its text outside a kernel."""
    from IPython.display import display

    if not _in_kernel():
        display({"text/plain": schedule.text()}, raw=True)
        return
    watch = ScheduleWatch(schedule)

    def act(action: str) -> None:
        watch.act_soon(action)
        poller().wake()

    surface: Surface = ScheduleWidget(watch.snapshot, act) if have_ipywidgets() else TextSurface(watch.snapshot)
    go_live(watch, surface, schedule.text())


_views.register(Schedule, show)
