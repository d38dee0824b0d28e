"""The notebook view of a map's progress: a bar with done/failed/in flight, its rate and its ETA.

``_progress.Progress`` calls ``render`` at most every 0.1 s, possibly from the
bridge's event-loop thread; that thread runs in a copy of the calling cell's
context, so the widget and its updates belong to the cell that started the map.
Where widgets are not rendered (nbconvert, GitHub, a notebook saved without its
widget state) the output reads as its text (``text/plain``) or a static bar
(``text/html``); both are written again with the final counts when the map ends.

>>> list(square.map(range(1000)))   # in a notebook: a bar appears after 0.5 s

A map with ``return_exceptions=True`` that ended with failures gets a "Retry N failed"
button: it reruns only those inputs on a thread of its own (the kernel stays free), the
bar and counts move each success from failed to done, and each failure records what its
rerun got, so ``results = f.retry_failed(results)`` merges those outcomes without running
them again (and reruns only what still fails). The view keeps at most
``_progress.FAILURES_KEPT`` (1,000) failures: past that the button reruns the first 1,000
("Retry first 1,000 of 52,310 failed") and ``f.retry_failed(results)`` reruns them all.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from IPython.display import display

from .._progress import Progress, View

_GREEN, _RED, _BLUE = "#2e7d32", "#c62828", "#1565c0"


def progress_html(progress: Progress) -> str:
    """A static bar and the counts line: what nbconvert and GitHub show instead of the widget.

    >>> progress_html(Progress("square.map", total=4))   # '<div class="remotecell-progress">...'
    """
    total = progress.total if progress.total is not None else progress.submitted
    finished = progress.done + progress.failed
    percent = 100.0 * finished / total if total else 0.0
    color = _RED if progress.failed else (_GREEN if progress.finished_s is not None else _BLUE)
    return (f'<div class="remotecell-progress" style="font-family:monospace">'
            f"<b>{html.escape(progress.label)}</b> "
            f'<span style="display:inline-block;width:160px;height:10px;background:#e0e0e0;vertical-align:middle">'
            f'<span style="display:block;width:{percent:.0f}%;height:10px;background:{color}"></span></span> '
            f"{html.escape(progress.line().split(': ', 1)[-1])}</div>")


class WidgetView:
    """An ipywidgets bar, a line of counts, the rate and the ETA; green when all succeeded, red when some failed."""

    def __init__(self, progress: Progress) -> None:
        import ipywidgets as widgets

        self.bar = widgets.IntProgress(value=0, min=0, max=max(progress.total or 0, 1), description=progress.label,
                                       style={"description_width": "initial"})
        self.counts = _part(widgets, "remotecell-progress-counts")
        self.rate = _part(widgets, "remotecell-progress-rate")
        self.eta = _part(widgets, "remotecell-progress-eta")
        self.retry = widgets.Button(description="Retry failed", button_style="warning",
                                    layout=widgets.Layout(display="none"))
        self.note = _part(widgets, "remotecell-progress-note")
        self.retry.on_click(lambda _button: self._retry(progress))
        self.bar.add_class("remotecell-progress-bar")
        self.retry.add_class("remotecell-progress-retry")
        self.box = widgets.HBox([self.bar, self.counts, self.rate, self.eta, self.retry, self.note])
        self.box.add_class("remotecell-progress")
        self.retried: list[Any] = []  # what the button's last rerun got, in the order of the failures it reran
        self.handle: Any = display(self._bundle(progress), raw=True, display_id=True)

    def _bundle(self, progress: Progress) -> dict[str, Any]:
        return dict(self.box._repr_mimebundle_(), **{"text/plain": progress.line(),
                                                     "text/html": progress_html(progress)})

    def render(self, progress: Progress) -> None:
        total = progress.total if progress.total is not None else progress.submitted
        with self.bar.hold_sync():
            self.bar.max = max(total, 1)
            self.bar.value = progress.done + progress.failed
            if progress.failed:
                self.bar.bar_style = "danger"
        self.counts.value = html.escape(progress.counts())
        self.rate.value = html.escape(progress.rate_text())
        self.eta.value = html.escape(progress.eta_text())

    def close(self, progress: Progress) -> None:
        if not progress.failed and progress.done == progress.total:
            self.bar.bar_style = "success"
        elif not progress.failed:
            self.bar.bar_style = "warning"  # stopped early: interrupted, or the caller stopped reading
        self._save(progress)
        self._offer_retry(progress)

    def _save(self, progress: Progress) -> None:
        if self.handle is not None:  # the saved notebook's text and static bar: the final counts
            self.handle.update(self._bundle(progress), raw=True)

    def _offer_retry(self, progress: Progress) -> None:
        """The button, when the map returned failures it can rerun."""
        count = len(progress.failures)
        if progress.retry is None or not count:
            self.retry.layout.display = "none"
            return
        self.retry.description = f"Retry {count} failed"
        if progress.failures_not_kept:  # past Progress.FAILURES_KEPT: the button reruns the first ones only
            self.retry.description = f"Retry first {count:,} of {count + progress.failures_not_kept:,} failed"
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
        self._save(progress)
        name = progress.label.rsplit(".", 1)[0]  # square.map -> square
        self.note.value = html.escape(f"retried {len(outcomes)}: {len(outcomes) - again} succeeded, {again} failed "
                                      f"again; results = {name}.retry_failed(results) merges them")
        self._offer_retry(progress)


def _part(widgets: Any, css_class: str) -> Any:
    part = widgets.HTML()
    part.add_class(css_class)
    return part


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
