"""The notebook view of a map's progress: a bar with done/failed/in flight, rate and ETA.

``_progress.Progress`` calls ``render`` at most every 0.1 s, possibly from the
bridge's event-loop thread; that thread runs in a copy of the calling cell's
context, so the widget and its updates belong to the cell that started the map.

>>> list(square.map(range(1000)))   # in a notebook: a bar appears after 0.5 s
"""

from __future__ import annotations

import html
from typing import Any

from IPython.display import display

from .._progress import Progress, View


class WidgetView:
    """An ipywidgets bar and a line of counts; green when all succeeded, red when some failed."""

    def __init__(self, progress: Progress) -> None:
        import ipywidgets as widgets

        self.bar = widgets.IntProgress(value=0, min=0, max=max(progress.total or 0, 1), description=progress.label,
                                       style={"description_width": "initial"})
        self.counts = widgets.HTML()
        self.box = widgets.HBox([self.bar, self.counts])
        display(self.box)

    def render(self, progress: Progress) -> None:
        total = progress.total if progress.total is not None else progress.submitted
        with self.bar.hold_sync():
            self.bar.max = max(total, 1)
            self.bar.value = progress.done + progress.failed
            if progress.failed:
                self.bar.bar_style = "danger"
        self.counts.value = html.escape(progress.line().split(": ", 1)[-1])

    def close(self, progress: Progress) -> None:
        if not progress.failed and progress.done == progress.total:
            self.bar.bar_style = "success"
        elif not progress.failed:
            self.bar.bar_style = "warning"  # stopped early: interrupted, or the caller stopped reading


class TextView:
    """Without ipywidgets: one line of text, updated in place."""

    def __init__(self, progress: Progress) -> None:
        self.handle: Any = display({"text/plain": progress.line()}, raw=True, display_id=True)

    def render(self, progress: Progress) -> None:
        if self.handle is not None:
            self.handle.update({"text/plain": progress.line()}, raw=True)

    def close(self, progress: Progress) -> None:
        pass


def progress_view(progress: Progress) -> View:
    """The view ``set_notebook_view`` gets: a widget when ipywidgets is installed, else a text line."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return TextView(progress)
    return WidgetView(progress)
