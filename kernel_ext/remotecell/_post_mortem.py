"""Which remote frames an exception can be debugged in: what ``_client`` marks, what ``debugging`` finds.

A container that held a failed input's frames says so in the error (``ErrorInfo.debug``);
``_client.error_from`` marks the exception it makes with a ``RemoteFrames`` and keeps the
last one seen in this process (``LAST``), for ``rc.debug()`` after an exception caught in a script.
"""

from __future__ import annotations

import dataclasses
import linecache
import sys
import time

ATTRIBUTE = "__remotecell_frames__"
SOURCE_MAX_CHARS = 1 << 20  # a file's text sent along when the debugger opens, at most
SOURCES_MAX_CHARS = 4 << 20  # all of them


@dataclasses.dataclass(frozen=True)
class RemoteFrames:
    """Frames a container holds: ``CONTAINER:KEY``, for how long, since when (wall clock), and the error."""

    target: str
    hold_s: float
    raised_at: float
    error: str  # ``Type: message``, for what the debugger says
    files: tuple[str, ...] = ()  # the source files of its frames, whose text this side may have

    @property
    def left_s(self) -> float:
        return self.hold_s - (time.time() - self.raised_at)


LAST: RemoteFrames | None = None


def mark(exc: BaseException, target: str, hold_s: float, error: str, files: tuple[str, ...] = ()) -> None:
    """``exc`` came from a container that holds its frames as ``target``."""
    global LAST
    if not target:
        return
    frames = RemoteFrames(target, hold_s, time.time(), error, files)
    try:
        setattr(exc, ATTRIBUTE, frames)
    except (AttributeError, TypeError):  # an exception class that takes no attributes: LAST still has it
        pass
    LAST = frames


def sources(frames: RemoteFrames) -> dict[str, str]:
    """The text this side has of the frames' files (linecache: files, and a notebook's cells), within limits."""
    found: dict[str, str] = {}
    total = 0
    for filename in frames.files:
        text = "".join(linecache.getlines(filename))
        if not text or len(text) > SOURCE_MAX_CHARS or total + len(text) > SOURCES_MAX_CHARS:
            continue
        found[filename] = text
        total += len(text)
    return found


def of(exc: BaseException | None) -> RemoteFrames | None:
    """The remote frames of ``exc``, or of the exception it was raised from or during (``%%remote`` re-raises)."""
    seen = 0
    while exc is not None and seen < 16:
        frames = getattr(exc, ATTRIBUTE, None)
        if isinstance(frames, RemoteFrames):
            return frames
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def find(exc: BaseException | None = None) -> RemoteFrames | None:
    """``exc``'s frames; without one, the last uncaught exception's (``sys.last_value``), else the last seen."""
    if exc is not None:
        return of(exc)
    last = getattr(sys, "last_value", None)
    return of(last) or LAST
