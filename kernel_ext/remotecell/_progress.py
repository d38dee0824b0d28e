"""Progress of a map-like call: one source of counts, shown by a terminal line or a notebook widget.

The map loop updates a :class:`Progress`; a view renders it.  Which view: the
notebook's (registered by the IPython extension through :func:`set_notebook_view`)
inside a kernel, a ``rich`` bar when stderr is a terminal, and a plain line every
few seconds when it is piped (``_terminal``).  Code running in a container shows
none (its stderr is its logs).  ``progress=True``/``False`` overrides.  A view
appears only once the call has run for ``SHOW_AFTER_S``, so quick maps stay quiet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from remotecell_runtime.protocol.image_spec import IN_CONTAINER_ENV

from . import _retry, _terminal

SHOW_AFTER_S = 0.5
RENDER_EVERY_S = 0.1
# Failures a map's view keeps for its "Retry failed" button, at most: each holds its exception, its
# traceback's frames and its input, so a 1,000,000-input map failing often must not keep them all here
# (the caller's list has them; ``f.retry_failed(results)`` reruns every one).
FAILURES_KEPT = 1000


class View(Protocol):
    def render(self, progress: Progress) -> None: ...
    def close(self, progress: Progress) -> None: ...


ViewFactory = Callable[["Progress"], View]
_notebook_view: ViewFactory | None = None


def set_notebook_view(factory: ViewFactory | None) -> None:
    """The IPython extension registers its widget view here (``None`` removes it)."""
    global _notebook_view
    _notebook_view = factory


class Progress:
    """Counts of one map: submitted, done, failed (in flight = submitted - done - failed).

    >>> p = Progress("square.map", total=3)
    >>> p.submitted += 3; p.advance(ok=True); p.in_flight
    2
    """

    def __init__(self, label: str, total: int | None = None, show: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.submitted = 0
        self.done = 0
        self.failed = 0
        self.started_s = time.monotonic()
        self.finished_s: float | None = None
        self._view: View | None = None
        self._factory = _choose_view(show)
        self._show_at_once = show is True  # asked for: shown from the first result, even for a quick map
        self._rendered_s = 0.0
        self.failures: list[BaseException] = []  # returned failures (return_exceptions): the view's retry button
        self.failures_not_kept = 0  # returned failures past ``FAILURES_KEPT``, or with no view to offer them
        # Set by the map: reruns the given failures (recording each outcome on its failure) and returns them.
        self.retry: Callable[[list[BaseException]], list[Any]] | None = None

    @property
    def in_flight(self) -> int:
        return self.submitted - self.done - self.failed

    @property
    def elapsed_s(self) -> float:
        return (self.finished_s or time.monotonic()) - self.started_s

    @property
    def rate(self) -> float:
        """Finished inputs per second so far."""
        elapsed = self.elapsed_s
        return (self.done + self.failed) / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when the total is known."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done - self.failed) / self.rate)

    def keep_failure(self, failure: BaseException) -> None:
        """A returned failure, for the view's retry button: kept only where a button can show (a notebook view,
        with ``retry`` set) and only the first ``FAILURES_KEPT``; the rest are counted."""
        if self.retry is None or self._factory is None or self._factory is _terminal.map_view \
                or len(self.failures) >= FAILURES_KEPT:
            self.failures_not_kept += 1
            return
        self.failures.append(failure)

    def advance(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self._factory is not None:  # once per result: nothing more when nothing shows it
            self._maybe_render()

    def _maybe_render(self) -> None:
        now = time.monotonic()
        if now - self._rendered_s < RENDER_EVERY_S:
            return
        if now - self.started_s < SHOW_AFTER_S and not self._show_at_once:
            return
        self._rendered_s = now
        if self._view is None and self._factory is not None:
            self._view = self._factory(self)
        if self._view is None:
            return
        self._view.render(self)

    def close(self) -> None:
        """The map ended (or was stopped): a shown view gets its final state."""
        if self.finished_s is not None:
            return
        self.finished_s = time.monotonic()
        if self.total is None:
            self.total = self.submitted
        if self._view is None and self._show_at_once and self._factory is not None:
            self._view = self._factory(self)
        if self._view is not None:
            self._view.render(self)
            self._view.close(self)

    def retried(self, outcomes: list[Any]) -> None:
        """A rerun of failures came back: each success moves from failed to done; the failures are what still fail."""
        still = [value for value in outcomes if _retry.failed_input(value) is not None]
        moved = len(outcomes) - len(still)
        self.done += moved
        self.failed -= moved
        self.failures = still

    def rate_text(self) -> str:
        """``38.2/s`` (inputs finished per second so far)."""
        return f"{self.rate:,.1f}/s" if self.rate < 100 else f"{self.rate:,.0f}/s"

    def eta_text(self) -> str:
        """``ETA 23 s`` while it runs (``ETA -`` with no rate or total yet), ``took 1.6 s`` once ended."""
        if self.finished_s is not None:
            return f"took {self.elapsed_s:.1f} s"
        eta = self.eta_s
        return "ETA -" if eta is None else f"ETA {eta:.0f} s"

    def counts(self) -> str:
        """``12/30 done, 1 failed, 4 in flight``."""
        total = "?" if self.total is None else str(self.total)
        parts = [f"{self.done}/{total} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(f"{self.in_flight} in flight")
        return ", ".join(parts)

    def line(self) -> str:
        """One line of text: ``label: done/total (failed), in flight, rate, ETA``."""
        parts = [f"{self.label}: {self.counts()}", f"{self.rate:,.0f}/s"]
        eta = self.eta_s
        if eta is not None and self.finished_s is None:
            parts.append(f"ETA {eta:.0f} s")
        elif self.finished_s is not None:
            parts.append(f"{self.elapsed_s:.1f} s")
        return ", ".join(parts)


_in_kernel = _terminal.in_kernel  # the views of widgets/ ask it here


DEFAULT_SHOW: bool | None = None  # ``rc.enable_output(show_progress=False)`` sets False: no view unless asked


def _choose_view(show: bool | None) -> ViewFactory | None:
    show = DEFAULT_SHOW if show is None else show
    if show is False:
        return None
    if _in_kernel():  # the widget shows it (with the extension loaded); never terminal lines in a cell
        return _notebook_view
    if show is None and os.environ.get(IN_CONTAINER_ENV):  # in a container: its stderr is the call's logs
        return None
    return _terminal.map_view
