"""Progress outside a notebook: a ``rich`` bar on a terminal, a plain line now and then when output is piped.

``_progress`` picks the view (:func:`map_view`); an image build asks :func:`build_view`
for its own.  On a terminal the bar is redrawn in place at most every 0.1 s (the
map's own throttle); piped, a line is written when the view appears and then at
most every ``LINE_EVERY_S``, and always a last one, so a log of a long map gets
a line every few seconds, never one per input:

    tick.map: 120/1000 done, 3 failed, 40 in flight, 38/s, ETA 23 s

``rich`` is imported only when a bar is shown: a script that maps nothing pays nothing.
"""

from __future__ import annotations

import re
import sys
import time
from typing import IO, Any, Protocol


class MapCounts(Protocol):
    """What a view reads of ``_progress.Progress`` (a protocol: that module imports this one)."""

    label: str
    total: int | None
    done: int
    failed: int

    def line(self) -> str: ...


def in_kernel() -> bool:
    """This process is a Jupyter kernel (IPython with a kernel): its output goes to cells, not a terminal."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return bool(get_ipython and get_ipython() and hasattr(get_ipython(), "kernel"))

LINE_EVERY_S = 5.0  # piped output: at most one progress line per this many seconds (and the last one)


def is_terminal(stream: IO[str]) -> bool:
    """``stream`` is an interactive terminal (not a pipe, a file or a Jupyter kernel's stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or a stand-in without isatty
        return False


def _counts(progress: MapCounts) -> str:
    return progress.line().split(": ", 1)[-1]


class LineView:
    """Piped output: ``label: done/total done, ...`` lines on stderr, throttled to one per ``LINE_EVERY_S``."""

    def __init__(self, progress: MapCounts, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._written_s: float | None = None

    def render(self, progress: MapCounts) -> None:
        now = time.monotonic()
        if self._written_s is not None and now - self._written_s < LINE_EVERY_S:
            return
        self._written_s = now
        self._write(progress.line())

    def close(self, progress: MapCounts) -> None:
        self._write(progress.line())  # after ``render`` at close: the final counts, even within LINE_EVERY_S

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


class LiveBar:
    """One ``rich`` progress bar on ``stream``, redrawn only when asked (no refresh thread).

    While it is shown, what this process writes to stderr (and to stdout when stdout is the
    same kind of terminal) goes above the bar instead of through it.
    """

    def __init__(self, label: str, total: float | None, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(file=stream, highlight=False)
        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                TextColumn("{task.fields[counts]}", markup=False), TimeElapsedColumn(),
                                console=self.console, auto_refresh=False,
                                redirect_stdout=is_terminal(sys.stdout), redirect_stderr=True)
        self.task = self.bar.add_task(label, total=total, counts="")
        self.bar.start()

    def update(self, completed: float, total: float | None, counts: str, failed: bool = False) -> None:
        self.bar.update(self.task, completed=completed, total=total, counts=counts)
        if failed:
            self.bar.columns[1].complete_style = "red"  # type: ignore[union-attr]  # the BarColumn made above
        self.bar.refresh()

    def print(self, text: str) -> None:
        """A line above the bar (a build log line): the bar stays at the bottom."""
        self.console.print(text, end="" if text.endswith("\n") else "\n", markup=False, highlight=False)

    def stop(self) -> None:
        self.bar.stop()


class BarView:
    """A terminal: ``tick.map ━━━━━━━╸━━━ 120/1000 done, 3 failed, 40 in flight, 38/s, ETA 23 s 0:00:03``."""

    def __init__(self, progress: MapCounts, stream: IO[str] | None = None) -> None:
        self.live = LiveBar(progress.label, progress.total, stream or sys.stderr)

    def render(self, progress: MapCounts) -> None:
        self.live.update(progress.done + progress.failed, progress.total, _counts(progress), bool(progress.failed))

    def close(self, progress: MapCounts) -> None:
        self.live.stop()


def map_view(progress: MapCounts) -> BarView | LineView:
    """The view of a map outside a notebook: a bar when stderr is a terminal, else plain lines."""
    return BarView(progress) if is_terminal(sys.stderr) else LineView(progress)


# -- image builds -------------------------------------------------------------------------------

_BUILDING = re.compile(r"Building image (\w+) \(")
_STEP = re.compile(r"=> Step (\d+)/(\d+): (.*)")


class BuildView:
    """An image build on a terminal: its log printed above a bar of its layers.

    The runtime's log says ``Building image KEY (...)`` first and ``=> Step k/n: what`` as each
    layer starts (step 0 is the base; cached layers come before the first step said): when step
    ``k`` starts, ``k`` of the ``n + 1`` layers are there.

    >>> view = BuildView("image")
    >>> view.output("stdout", "=> Step 1/2: uv pip install humanize\\n")    # the bar: 1/3, "uv pip install ..."
    >>> view.close()
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.live: LiveBar | None = None
        self.steps = 0
        self.total: int | None = None
        self.doing = "starting"

    def output(self, stream: str, text: str) -> None:
        """The ``OutputSink`` of the build request: each log line above the bar, which follows the steps."""
        if self.live is None:
            self.live = LiveBar(self.label, None, sys.stderr)
        for line in text.splitlines():
            self._follow(line, self.live)
        self.live.print(text)
        self.live.update(self.steps, self.total, f"{self.steps}/{self.total or '?'} layers, {self.doing}")

    def _follow(self, line: str, live: LiveBar) -> None:
        building = _BUILDING.search(line)
        if building:
            self.label = f"image {building.group(1)[:12]}"
            live.bar.update(live.task, description=self.label)
        step = _STEP.search(line)
        if step:
            self.steps, self.total = int(step.group(1)), int(step.group(2)) + 1
            self.doing = step.group(3)[:60]

    def close(self, ok: bool = True) -> None:
        if self.live is None:
            return
        if ok and self.total is not None:
            self.live.update(self.total, self.total, f"{self.total}/{self.total} built")
        self.live.stop()


def build_view(label: str) -> Any:
    """A :class:`BuildView` when stdout and stderr are both a terminal (not in a kernel), else None: the build
    log then goes where it always did (the cell, or plain lines of the piped output)."""
    if in_kernel() or not (is_terminal(sys.stderr) and is_terminal(sys.stdout)):
        return None
    return BuildView(label)
