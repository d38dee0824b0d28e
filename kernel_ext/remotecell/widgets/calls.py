"""The notebook views of spawn handles: a live widget per ``FunctionCall`` and per ``FunctionCallGroup``.

``call`` as a cell's last expression (or ``display(call)``) shows the call's
function, id, state (and why it waits when queued), elapsed time, attempts,
container, the last lines it printed, a Cancel button and, once it is done, the
result's repr or the error's type and message.  A group shows counts per state
as a bar, and Cancel.  Both update from the poller thread (``widgets.poller``)
every 0.5 s until the call is final, without blocking the kernel.

What a spawned call prints never goes to a cell: the runtime keeps it in the
call's logs, and the view shows their tail.  Without ipywidgets the view is a
text display updated in place; outside a kernel it is the handle's ``repr``.

>>> call = square.spawn(7)
>>> call          # in a notebook: the live view; ends as "succeeded ... result: 49"
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _cache_note, _views
from .._progress import _in_kernel
from ..calls import FunctionCall, FunctionCallGroup
from ..exceptions import InputCancelled, NotFoundError
from .poller import poller

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "expired", "missing"})
LOG_LINES = 20  # the log tail a view shows
REPR_CHARS = 2000  # a longer result repr is cut here
_COLORS = {"queued": "gray", "running": "#1565c0", "succeeded": "green", "failed": "#c62828",
           "cancelled": "#ef6c00", "expired": "gray", "missing": "#c62828"}


def duration(seconds: float) -> str:
    """``0.4 s``, ``12.0 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def tail(text: str, lines: int = LOG_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def short_repr(value: Any) -> str:
    """``repr(value)``, cut at ``REPR_CHARS``; a repr that raises is named, not raised."""
    try:
        text = repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} whose repr raised {type(exc).__name__}: {exc}>"
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS] + f"... ({len(text):,} characters)"


# -- what the runtime says ----------------------------------------------------------------------


@dataclass
class CallSnapshot:
    """One call as last heard from the runtime.

    >>> CallSnapshot("square", "fc-1", "running", attempts=1, elapsed_s=3.2).line()
    'square fc-1: running 3.2 s, attempt 1'
    """

    function: str
    call_id: str
    state: str = "asking the runtime"
    reason: str = ""
    attempts: int = 0
    elapsed_s: float | None = None
    container: str = ""
    log_tail: str = ""
    result: str | None = None  # the result's repr, once succeeded
    from_cache: bool = False  # the result came from the result cache (a cache=True function): it did not run
    error: str = ""  # "Type: message" of a failed call (or why there is no result)
    problem: str = ""  # why the runtime could not be asked this time; the view keeps trying

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def progress(self) -> str:
        """``running 3.2 s, attempt 1, container c-2``; ``queued 0.1 s (waiting for a free container)``."""
        parts = [self.state if self.elapsed_s is None else f"{self.state} {duration(self.elapsed_s)}"]
        if self.attempts:
            parts.append(f"attempt {self.attempts}")
        if self.container and not self.final:
            parts.append(f"container {self.container}")
        line = ", ".join(parts)
        if self.reason and self.state == "queued":
            line += f" ({self.reason})"
        if self.problem:
            line += f"; {self.problem}"
        return line

    def line(self) -> str:
        return f"{self.function} {self.call_id}: {self.progress()}"

    def outcome_label(self) -> str:
        return "result (from the cache)" if self.from_cache else "result"

    def text(self) -> str:
        """The whole view as text: the line, the log tail, the outcome."""
        lines = [self.line(), *("  | " + line for line in self.log_tail.splitlines())]
        if self.result is not None:
            lines.append(f"  {self.outcome_label()}: {self.result}")
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


@dataclass
class GroupSnapshot:
    """One ``spawn_map`` as last heard from the runtime.

    >>> GroupSnapshot("square.spawn_map", "fg-1", 4, {"succeeded": 3, "running": 1}).line()
    'square.spawn_map fg-1: 3/4 finished (3 succeeded), 1 running'
    """

    function: str
    group_id: str
    total: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    problem: str = ""

    @property
    def finished(self) -> int:
        return sum(n for state, n in self.counts.items() if state in FINAL_STATES)

    @property
    def final(self) -> bool:
        return self.total is not None and self.finished >= self.total

    def line(self) -> str:
        ended = ", ".join(f"{n} {s}" for s, n in self.counts.items() if s in FINAL_STATES and n)
        pending = [f"{self.counts[s]} {s}" for s in ("running", "queued") if self.counts.get(s)]
        total = "?" if self.total is None else str(self.total)
        line = ", ".join([f"{self.function} {self.group_id}: {self.finished}/{total} finished"
                          + (f" ({ended})" if ended else ""), *pending])
        return line + (f"; {self.problem}" if self.problem else "")

    def text(self) -> str:
        return self.line()


class Refreshes(Protocol):
    """Asks the runtime again; returns a snapshot (with ``final`` and ``text()``) for a surface."""

    def refresh(self) -> Any: ...


class Watch(Refreshes, Protocol):
    """Asks the runtime about one handle; ``cancel_soon`` makes the next refresh cancel it first."""

    def cancel_soon(self) -> None: ...


def runtime_problem(exc: Exception) -> str:
    return f"cannot ask the runtime now ({type(exc).__name__}: {exc})"


class _Watch:
    """What both watches share: Cancel (pressed on the kernel's main thread) is sent by the next refresh."""

    def __init__(self, handle: FunctionCall | FunctionCallGroup) -> None:
        self._handle = handle
        self._cancel = False

    def cancel_soon(self) -> None:
        self._cancel = True

    def _send_cancel(self) -> None:
        if self._cancel:
            self._handle.cancel()
            self._cancel = False  # only once it went through: a failed cancel is sent again next time


class CallWatch(_Watch):
    """The runtime's view of one ``FunctionCall``, asked again on each ``refresh``."""

    def __init__(self, call: FunctionCall) -> None:
        super().__init__(call)
        self.call = call
        self.snapshot = CallSnapshot(call.function_name or "spawned call", call.object_id)

    def refresh(self) -> CallSnapshot:
        snap = self.snapshot
        try:
            self._send_cancel()
            self._read_status(self.call.status())
            if snap.state != "expired":
                snap.log_tail = tail(self.call.logs())
            if snap.final:
                self._read_outcome()
            snap.problem = ""
        except NotFoundError as exc:  # not on this runtime (another runtime's id, or its store was wiped)
            snap.state, snap.error, snap.problem = "missing", str(exc), ""
        except Exception as exc:  # the runtime is restarting or gone: say so and ask again next time
            snap.problem = runtime_problem(exc)
        return snap

    def _read_status(self, status: dict[str, Any]) -> None:
        snap = self.snapshot
        snap.state = str(status["state"])
        snap.reason = str(status.get("reason") or "")
        snap.attempts = int(status.get("attempts") or 0)
        snap.container = str(status.get("container") or "")
        if self.call.function_name is None and status.get("function"):
            snap.function = str(status["function"])
        created = status.get("created_at")
        if created is not None:
            snap.elapsed_s = max(0.0, (status.get("finished_at") or time.time()) - created)

    def _read_outcome(self) -> None:
        snap = self.snapshot
        try:
            with _cache_note.quiet() as heard:  # the view says it, rather than a line in whichever cell runs now
                value = self.call.get(timeout=0)
            snap.result = short_repr(value)
            snap.from_cache = bool(heard)
        except InputCancelled:
            pass  # the state says it
        except Exception as exc:  # the call's own error (or why its result cannot be read here)
            snap.error = f"{type(exc).__name__}: {exc}"


class GroupWatch(_Watch):
    """The runtime's counts per state of one ``FunctionCallGroup``."""

    def __init__(self, group: FunctionCallGroup) -> None:
        super().__init__(group)
        self.group = group
        label = f"{group.function_name}.spawn_map" if group.function_name else "spawn_map"
        self.snapshot = GroupSnapshot(label, group.object_id)

    def refresh(self) -> GroupSnapshot:
        snap = self.snapshot
        try:
            self._send_cancel()
            snap.counts = self.group.status()
            snap.total = len(self.group)
            snap.problem = ""
        except Exception as exc:
            snap.problem = runtime_problem(exc)
        return snap


# -- where it is shown --------------------------------------------------------------------------


class Surface(Protocol):
    @property
    def closed(self) -> bool: ...

    def show(self, text: str) -> None: ...
    def render(self, snapshot: Any) -> None: ...


class BoxSurface:
    """An ipywidgets view in one box: shown with a text stand-in, closed when its box's comm is."""

    box: Any

    @property
    def closed(self) -> bool:
        return self.box.comm is None

    def show(self, text: str) -> None:
        """Display the widget; ``text`` (and ``static_html``) stand in for it where widgets are not rendered
        (nbconvert, GitHub, a notebook saved without its widget state)."""
        from IPython.display import display

        display(dict(self.box._repr_mimebundle_(), **{"text/plain": text, "text/html": self.static_html(text)}),
                raw=True)

    def static_html(self, text: str) -> str:
        """What an HTML page shows of the view as it was when displayed: its text, unless a view draws more."""
        return f"<pre>{html.escape(text)}</pre>"


class _Widget(BoxSurface):
    """What both call widgets share: a Cancel button that disables itself."""

    def __init__(self, on_cancel: Callable[[], None]) -> None:
        import ipywidgets as widgets

        self.cancel = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                     tooltip="stop it: cancel()", layout=widgets.Layout(width="auto"))
        self.cancel.add_class("remotecell-call-cancel")

        def clicked(_button: Any) -> None:  # runs on the kernel's main thread: only flags, the poller cancels
            self.cancel.disabled, self.cancel.description = True, "Cancelling"
            on_cancel()

        self.cancel.on_click(clicked)

    def finish(self) -> None:
        self.cancel.disabled = True


class CallWidget(_Widget):
    """A spawned call: title, state line, Cancel, log tail, outcome."""

    def __init__(self, snap: CallSnapshot, on_cancel: Callable[[], None]) -> None:
        import ipywidgets as widgets

        super().__init__(on_cancel)
        self.title = html_part(widgets, "remotecell-call-title")
        self.state = html_part(widgets, "remotecell-call-state")
        self.logs = html_part(widgets, "remotecell-call-logs")
        self.outcome = html_part(widgets, "remotecell-call-outcome")
        self.box = widgets.VBox([widgets.HBox([self.title, self.state, self.cancel]), self.logs, self.outcome])
        self.box.add_class("remotecell-call")
        self.render(snap)

    def render(self, snap: CallSnapshot) -> None:
        """The state line goes last: whoever sees a final state sees the outcome and logs with it."""
        self.title.value = f"<b>{html.escape(snap.function)}</b> <code>{html.escape(snap.call_id)}</code>"
        self.logs.value = f"<pre>{html.escape(snap.log_tail)}</pre>" if snap.log_tail else ""
        if snap.result is not None:
            self.outcome.value = f"{snap.outcome_label()}: <code>{html.escape(snap.result)}</code>"
        elif snap.error:
            self.outcome.value = f'<span style="color:{_COLORS["failed"]}">{html.escape(snap.error)}</span>'
        if snap.final:
            self.finish()
        color = _COLORS.get(snap.state, "gray")
        rest = html.escape(snap.progress().removeprefix(snap.state))
        self.state.value = f'<b style="color:{color}">{html.escape(snap.state)}</b>{rest}'


class GroupWidget(_Widget):
    """A ``spawn_map``: a bar of finished inputs, counts per state, Cancel."""

    def __init__(self, snap: GroupSnapshot, on_cancel: Callable[[], None]) -> None:
        import ipywidgets as widgets

        super().__init__(on_cancel)
        self.bar = widgets.IntProgress(value=0, min=0, max=1, description=snap.function,
                                       style={"description_width": "initial"})
        self.bar.add_class("remotecell-group-bar")
        self.counts = html_part(widgets, "remotecell-group-counts")
        self.box = widgets.HBox([self.bar, self.counts, self.cancel])
        self.box.add_class("remotecell-group")
        self.render(snap)

    def render(self, snap: GroupSnapshot) -> None:
        """The bar goes last, as a call's state line does."""
        self.counts.value = html.escape(snap.line().split(": ", 1)[-1])
        if snap.final:
            self.finish()
        with self.bar.hold_sync():
            self.bar.max = max(snap.total or 0, 1)
            self.bar.value = snap.finished
            self.bar.bar_style = _bar_style(snap)


def html_part(widgets: Any, css_class: str) -> Any:
    """An HTML widget with a class (tests and styles find it by that)."""
    out = widgets.HTML()
    out.add_class(css_class)
    return out


def _bar_style(snap: GroupSnapshot) -> str:
    if snap.counts.get("failed"):
        return "danger"
    if not snap.final:
        return ""
    return "success" if snap.counts.get("succeeded") == snap.total else "warning"


class TextSurface:
    """Without ipywidgets: the snapshot's text, a display updated in place."""

    closed = False

    def __init__(self, snap: Any) -> None:
        self._shown = snap.text()
        self.handle: Any = None

    def show(self, text: str) -> None:
        from IPython.display import display

        self.handle = display({"text/plain": self._shown}, raw=True, display_id=True)

    def render(self, snap: Any) -> None:
        text = snap.text()
        if text != self._shown and self.handle is not None:
            self._shown = text
            self.handle.update({"text/plain": text}, raw=True)


class Shown:
    """A shown view as the poller ticks it: ask the runtime, render, done when final or closed."""

    def __init__(self, watch: Refreshes, surface: Surface) -> None:
        self.watch = watch
        self.surface = surface

    def tick(self) -> bool:
        if self.surface.closed:
            return True
        snap = self.watch.refresh()
        self.surface.render(snap)
        return bool(snap.final)


def show(handle: FunctionCall | FunctionCallGroup) -> Shown | None:
    """Display a live view of ``handle`` (what ``_ipython_display_`` does); its ``repr`` outside a kernel.

    Nothing here asks the runtime: the view starts as "asking the runtime" and
    the poller fills it in, so displaying a handle never blocks the kernel.
    """
    from IPython.display import display

    if not _in_kernel():
        display({"text/plain": repr(handle)}, raw=True)
        return None
    watch: CallWatch | GroupWatch = CallWatch(handle) if isinstance(handle, FunctionCall) else GroupWatch(handle)

    def cancel_soon() -> None:
        watch.cancel_soon()
        poller().wake()

    return go_live(watch, _surface(watch, cancel_soon), repr(handle))


def go_live(watch: Refreshes, surface: Surface, text: str) -> Shown:
    """Display ``surface`` (``text`` where widgets are not rendered) and let the poller tick it from now on."""
    surface.show(text)
    shown = Shown(watch, surface)
    poller().add(shown)
    return shown


def have_ipywidgets() -> bool:
    """ipywidgets can be imported (else views are text updated in place)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _surface(watch: CallWatch | GroupWatch, on_cancel: Callable[[], None]) -> Surface:
    if not have_ipywidgets():
        return TextSurface(watch.snapshot)
    if isinstance(watch, CallWatch):
        return CallWidget(watch.snapshot, on_cancel)
    return GroupWidget(watch.snapshot, on_cancel)


_views.register(FunctionCall, show)
_views.register(FunctionCallGroup, show)
