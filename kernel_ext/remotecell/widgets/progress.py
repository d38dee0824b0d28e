"""The notebook view of a map's progress: a bar with done/failed/in flight, rate and ETA.

``_progress.Progress`` calls ``render`` at most every 0.1 s, possibly from the
bridge's event-loop thread; that thread runs in a copy of the calling cell's
context, so the widget and its updates belong to the cell that started the map.

>>> list(square.map(range(1000)))   # in a notebook: a bar appears after 0.5 s

A map with ``return_exceptions=True`` that ended with failures gets a "Retry N failed"
button: it reruns only those inputs on a thread of its own (the kernel stays free), the
bar and counts move each success from failed to done, and each failure records what its
rerun got, so ``results = f.retry_failed(results)`` merges those outcomes without running
them again (and reruns only what still fails).
"""

from __future__ import annotations

import html
import threading
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
        self.retry = widgets.Button(description="Retry failed", button_style="warning",
                                    layout=widgets.Layout(display="none"))
        self.note = widgets.HTML()
        self.retry.on_click(lambda _button: self._retry(progress))
        for part, css in ((self.bar, "bar"), (self.counts, "counts"), (self.retry, "retry"), (self.note, "note")):
            part.add_class(f"remotecell-map-{css}")
        self.box = widgets.HBox([self.bar, self.counts, self.retry, self.note])
        self.box.add_class("remotecell-map")
        self.retried: list[Any] = []  # what the button's last rerun got, in the order of the failures it reran
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
        self._offer_retry(progress)

    def _offer_retry(self, progress: Progress) -> None:
        """The button, when the map returned failures it can rerun."""
        count = len(progress.failures)
        if progress.retry is None or not count:
            self.retry.layout.display = "none"
            return
        self.retry.description = f"Retry {count} failed"
        self.retry.disabled = False
        self.retry.layout.display = None

    def _retry(self, progress: Progress) -> None:
        """A click: rerun the failures on a thread (a comm handler must not hold the kernel for a map)."""
        rerun, failures = progress.retry, list(progress.failures)
        if rerun is None or not failures or self.retry.disabled:
            return
        self.retry.disabled = True
        self.retry.description = f"Retrying {len(failures)}..."
        threading.Thread(target=self._rerun, args=(progress, rerun, failures), daemon=True,
                         name="remotecell-map-retry").start()

    def _rerun(self, progress: Progress, rerun: Any, failures: list[BaseException]) -> None:
        try:
            outcomes = rerun(failures)
        except Exception as exc:  # the runtime went away, say: the failures stay as they were
            self.note.value = html.escape(f"retry failed: {type(exc).__name__}: {exc}")
            self._offer_retry(progress)
            return
        progress.retried(outcomes)
        self.retried = outcomes
        again = len(progress.failures)
        self.render(progress)
        if not progress.failed:
            self.bar.bar_style = "success"
        name = progress.label.removesuffix(".map")
        self.note.value = html.escape(f"retried {len(outcomes)}: {len(outcomes) - again} succeeded, {again} failed "
                                      f"again; results = {name}.retry_failed(results) merges them")
        self._offer_retry(progress)


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
