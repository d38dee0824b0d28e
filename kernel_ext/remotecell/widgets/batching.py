"""``f.batch_stats()`` in a notebook: a small live view of how the runtime batches a function.

It shows batches run, items, items per second, the mean batch size against
``max_batch_size`` (a bar), why batches closed (full / waited), the queue wait
(mean, p99), the sizes of the last batches over time (a small chart: one dot
per batch, blue when it closed full, orange when it waited, the dashed line
``max_batch_size``) and a histogram of batch sizes.  Where widgets are not
rendered (nbconvert, GitHub) the output is the report text and a static HTML
copy of the chart and histogram.  It starts from the numbers the call
returned (so it never blocks the kernel) and is refreshed by the poller thread
(``widgets.poller``): every 0.5 s while batches keep coming, every 5 s once none
came for 10 s, so a view left open costs little.  Batching never ends, so the
view is never final: it stops when its widget is closed or the kernel exits.

Without ipywidgets the view is the report text, updated in place; outside a
kernel it is the ``BatchStats`` repr.

>>> embed.batch_stats()     # last expression of a cell: the live view
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

from .. import _views
from .._progress import _in_kernel
from ..batching import BatchStats, bar_length, closes, limits, number, size_rows, summary, waits
from .calls import BoxSurface, Shown, Surface, TextSurface, go_live, have_ipywidgets, html_part, runtime_problem

QUIET_AFTER_S = 10.0  # no new batch for this long: the view asks less often
QUIET_EVERY_S = 5.0
BAR_PX = 160  # the longest bar of the sizes histogram
CHART_W, CHART_H = 320, 72  # the chart of recent batch sizes over time, in px
_BLUE, _RED, _ORANGE = "#1565c0", "#c62828", "#ef6c00"


@dataclass
class StatsSnapshot:
    """The stats as last heard, and why the runtime could not be asked (the view keeps trying)."""

    stats: BatchStats
    problem: str = ""
    final = False  # batching goes on as long as the function is called: never final

    def text(self) -> str:
        return "\n".join([*self.stats.lines(), *([f"  ({self.problem})"] if self.problem else [])])


class StatsWatch:
    """Asks the runtime for one function's batch stats again; seldom once no new batch comes.

    >>> watch = StatsWatch(embed.batch_stats())
    >>> watch.refresh().stats["batches"]     # asked now (or the last answer while it is quiet)
    """

    def __init__(self, stats: BatchStats, clock: Callable[[], float] = time.monotonic) -> None:
        self.snapshot = StatsSnapshot(stats)
        self.clock = clock
        self._changed_at = clock()
        self._next_at = 0.0

    def refresh(self) -> StatsSnapshot:
        snap = self.snapshot
        now = self.clock()
        if now < self._next_at or snap.stats.fetch is None:
            return snap
        try:
            fresh = snap.stats.fetch()
            if fresh.get("batches") != snap.stats.get("batches"):
                self._changed_at = now
            snap.stats, snap.problem = fresh, ""
        except Exception as exc:  # the runtime is restarting or gone: say so and ask again later
            snap.problem = runtime_problem(exc)
        quiet = now - self._changed_at >= QUIET_AFTER_S
        self._next_at = now + QUIET_EVERY_S if quiet else 0.0
        return snap


class StatsWidget(BoxSurface):
    """Title and counts, the mean batch as a bar of max_batch_size, closes and waits, the sizes histogram."""

    def __init__(self, snap: StatsSnapshot) -> None:
        import ipywidgets as widgets

        self.title = html_part(widgets, "remotecell-batching-title")
        self.summary = html_part(widgets, "remotecell-batching-summary")
        self.fill = widgets.FloatProgress(value=0, min=0, max=1, description="mean batch",
                                          style={"description_width": "initial"})
        self.fill.add_class("remotecell-batching-fill")
        self.mean = html_part(widgets, "remotecell-batching-mean")
        self.closes = html_part(widgets, "remotecell-batching-closes")
        self.timeline = html_part(widgets, "remotecell-batching-timeline")
        self.sizes = html_part(widgets, "remotecell-batching-sizes")
        self.box = widgets.VBox([widgets.HBox([self.title, self.summary]), widgets.HBox([self.fill, self.mean]),
                                 self.closes, self.timeline, self.sizes])
        self.snap = snap
        self.box.add_class("remotecell-batching")
        self.render(snap)

    def render(self, snap: StatsSnapshot) -> None:
        """The counts go last: whoever sees the new count sees the rest with it.

        Only changed values reach the frontend (traitlets drop equal ones): a quiet view sends nothing.
        """
        stats = snap.stats
        self.title.value = f"<b>{escape(stats.function or 'batched function')}</b> batching:"
        mean = stats.get("mean_batch_size")
        with self.fill.hold_sync():
            self.fill.max = max(stats.get("max_batch_size") or 1, 1)
            self.fill.value = min(mean or 0.0, self.fill.max)
        self.mean.value = escape(f"{number(mean)} of {limits(stats)}")
        self.closes.value = escape(f"closed: {closes(stats)}; queue wait: {waits(stats)}")
        self.timeline.value = timeline_svg(stats.get("recent") or [], stats.get("max_batch_size") or 1)
        self.sizes.value = sizes_html(size_rows(stats.get("sizes") or {}, stats.get("max_batch_size")))
        problem = f' <span style="color:{_RED}">({escape(snap.problem)})</span>' if snap.problem else ""
        self.summary.value = escape(summary(stats)) + problem


    def static_html(self, text: str) -> str:
        """The report's first lines, the chart and the histogram, as plain HTML (nbconvert, GitHub)."""
        stats = self.snap.stats
        head = "<br>".join(escape(line.strip()) for line in text.splitlines()[:3])
        return (f'<div class="remotecell-batching">{head}'
                f'{timeline_svg(stats.get("recent") or [], stats.get("max_batch_size") or 1)}'
                f'{sizes_html(size_rows(stats.get("sizes") or {}, stats.get("max_batch_size")))}</div>')


def timeline_svg(recent: list[dict[str, Any]], max_batch_size: int) -> str:
    """The last batches' sizes over time: an inline SVG chart, a dot per batch at (how long ago, its size).

    Blue dots closed full, orange ones waited for ``wait_ms``; the dashed line is ``max_batch_size``.
    The runtime keeps the last 50 batches (``recent``); nothing to plot says so.

    >>> timeline_svg([{"size": 4, "reason": "full", "closed_s_ago": 0.5}], 4)   # '<svg ...><circle .../>...'
    """
    if not recent:
        return "<i>no recent batches to plot</i>"
    top = max(max_batch_size, *(int(b.get("size", 0)) for b in recent), 1)
    span = max(max(float(b.get("closed_s_ago", 0.0)) for b in recent), 1.0)
    left, right, bottom = 34, CHART_W - 6, CHART_H - 14

    def x(ago: float) -> float:
        return right - (right - left) * ago / span

    def y(size: float) -> float:
        return bottom - (bottom - 6) * size / top

    dots = "".join(
        f'<circle cx="{x(float(b.get("closed_s_ago", 0.0))):.1f}" cy="{y(int(b.get("size", 0))):.1f}" r="2.5" '
        f'fill="{_BLUE if b.get("reason") == "full" else _ORANGE}"><title>{int(b.get("size", 0))} '
        f'({escape(str(b.get("reason")))}), {float(b.get("closed_s_ago", 0.0)):.1f} s ago</title></circle>'
        for b in recent)
    text = 'font-size="9" fill="currentColor"'
    return (f'<svg class="remotecell-batching-chart" width="{CHART_W}" height="{CHART_H}" '
            f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" xmlns="http://www.w3.org/2000/svg">'
            f"<title>batch sizes over the last {span:.0f} s</title>"
            f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="gray" stroke-width="0.5"/>'
            f'<line x1="{left}" y1="{y(max_batch_size):.1f}" x2="{right}" y2="{y(max_batch_size):.1f}" '
            f'stroke="gray" stroke-dasharray="3,3" stroke-width="0.7"/>'
            f'<text x="{left - 4}" y="{y(max_batch_size) + 3:.1f}" text-anchor="end" {text}>{max_batch_size}</text>'
            f'<text x="{left - 4}" y="{bottom + 3}" text-anchor="end" {text}>0</text>'
            f'<text x="{left}" y="{CHART_H - 2}" {text}>{span:.0f} s ago</text>'
            f'<text x="{right}" y="{CHART_H - 2}" text-anchor="end" {text}>now</text>{dots}</svg>')


def sizes_html(rows: list[tuple[str, int]]) -> str:
    """The histogram of batch sizes as an HTML table of bars (no plotting library needed).

    >>> sizes_html([("16", 1), ("32", 62)])     # two rows: a short bar and a long one
    """
    if not rows:
        return "<i>no batches yet</i>"
    most = max(n for _, n in rows)
    body = "".join(
        f'<tr><td style="text-align:right;padding:0 6px 0 0">{escape(label)}</td>'
        f'<td style="width:{BAR_PX}px"><div style="background:{_BLUE};height:10px;'
        f'width:{bar_length(n, most, BAR_PX)}px"></div></td>'
        f'<td style="text-align:right;padding:0 0 0 6px">{n:,}</td></tr>'
        for label, n in rows)
    head = ('<tr><th style="text-align:right;padding:0 6px 0 0">batch size</th><th></th>'
            '<th style="text-align:right;padding:0 0 0 6px">batches</th></tr>')
    return f'<table style="border-collapse:collapse;line-height:1.2">{head}{body}</table>'


def show(stats: BatchStats) -> Shown | None:
    """Display a live view of ``stats`` (what ``BatchStats._ipython_display_`` does); its repr outside a kernel.

    Nothing here asks the runtime: the view starts from ``stats`` and the poller
    refreshes it, so displaying never blocks the kernel.  A copy that came
    through pickle (no ``fetch``) is shown as it is.
    """
    from IPython.display import display

    if not _in_kernel():
        display({"text/plain": repr(stats)}, raw=True)
        return None
    watch = StatsWatch(stats)
    surface: Surface = StatsWidget(watch.snapshot) if have_ipywidgets() else TextSurface(watch.snapshot)
    if stats.fetch is None:
        surface.show(repr(stats))
        return None
    return go_live(watch, surface, repr(stats))


_views.register(BatchStats, show)
