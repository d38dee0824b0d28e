"""sys.stdout/sys.stderr of a container: what an input prints goes to its own caller, as ``output`` messages.

A write during an input (``CURRENT`` set) is held per input id and sent when a line
ends or 8 KiB gather; ``flush_output`` sends what an input left before its item or
result goes out, so the caller sees output and values in the order they happened.
Text written outside any input goes to the process's own stream.  Each message is
also written there, so the daemon's last lines of a crashed container hold it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..protocol.message import Message
from ..protocol.messages.calls import OutputMsg
from .inputs import CURRENT

Send = Callable[[Message], None]
_STREAMS: list[Stream] = []  # every Stream made (the container's stdout and stderr)


class Stream:
    """sys.stdout/sys.stderr stand-in: lines written during an input go to its caller."""

    def __init__(self, send: Send, name: str, fallback: Any) -> None:
        self.send = send
        self.name = name
        self.fallback = fallback
        self.pending: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        _STREAMS.append(self)  # flushed by flush_output even if user code replaced sys.stdout since

    def write(self, text: str) -> int:
        input_id = CURRENT.get()
        if input_id is None:
            return int(self.fallback.write(text))
        with self.lock:
            parts = self.pending.setdefault(input_id, [])
            parts.append(text)
            full = "\n" in text or "\r" in text or sum(map(len, parts)) > 8192
        if full:
            self.flush_input(input_id)
        return len(text)

    def flush(self) -> None:
        input_id = CURRENT.get()
        if input_id is not None:
            self.flush_input(input_id)
        self.fallback.flush()

    def flush_input(self, input_id: str) -> None:
        if input_id not in self.pending:  # the common case, checked without the lock
            return
        with self.lock:
            parts = self.pending.pop(input_id, None)
        if not parts:
            return
        text = "".join(parts)
        # Also into the process's own pipe: the daemon keeps its last lines, which must
        # survive a crash that loses the message still queued in the socket.
        self.fallback.write(text)
        self.fallback.flush()
        self.send(OutputMsg(id=input_id, stream=self.name, text=text))

    def emit(self, kind: str, text: str) -> bool:
        """Send output of another kind (``"display"``: a JSON mime bundle) to the current input's caller.

        It follows what the input wrote to this stream so far; the daemon routes it by
        input id like any output.  False when no input runs in this thread or task.
        """
        input_id = CURRENT.get()
        if input_id is None:
            return False
        self.flush_input(input_id)
        self.send(OutputMsg(id=input_id, stream=kind, text=text))
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"

    def fileno(self) -> int:
        return int(self.fallback.fileno())


def flush_output(input_id: str) -> None:
    """Send what ``input_id`` printed and did not send yet, before what comes after it (an item, its result)."""
    for stream in _STREAMS:
        if stream.pending:  # most inputs print nothing: no call then
            stream.flush_input(input_id)
