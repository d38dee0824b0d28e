"""Cancelling an input: ``cancel`` messages, and SIGINT with the cancel pipe.

An input not started yet is marked (``Runner.cancelled``) and skipped when its turn
comes.  A running one is interrupted where it runs: an asyncio task is cancelled on
its loop, a worker thread gets ``Cancelled`` raised asynchronously.  An input on the
I/O thread is interrupted by SIGINT (the daemon writes its id to the cancel pipe
first): the handler raises ``Cancelled`` only when that input is the one running, so a
signal that arrives late never cancels the next one.  SIGINT with no id on the pipe
cancels whatever runs (a stop).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from ..protocol.framing import Payload
from ..protocol.messages.containers import CancelInputMsg
from .inputs import CURRENT, Cancelled
from .running import Runner


class Canceller:
    """Cancels inputs of the ``Runner``, by message or by signal."""

    def __init__(self, runner: Runner, cancel_fd: int | None) -> None:
        self.runner = runner
        self.cancel_fd = cancel_fd

    def on_cancel(self, msg: CancelInputMsg, payloads: list[Payload]) -> None:
        runner = self.runner
        runner.cancelled.add(msg.id)  # in case it has not started yet
        running = runner.running_inputs.get(msg.id)
        loop = runner.loaded.loop
        if loop is not None and hasattr(running, "cancel"):  # an asyncio task
            loop.call_soon_threadsafe(running.cancel)  # type: ignore[union-attr]
        elif isinstance(running, int) and running != runner.outbox.io_thread:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(running), ctypes.py_object(Cancelled))

    def on_sigint(self, signum: int, frame: Any) -> None:
        """Cancel the input named on the cancel pipe if it runs here; no name: whatever runs (a stop)."""
        named = self._read_cancel_pipe()
        self.runner.cancelled |= named
        current = CURRENT.get()
        if current is not None and (not named or current in named):  # it runs on this (the I/O) thread
            raise Cancelled()

    def _read_cancel_pipe(self) -> set[str]:
        if self.cancel_fd is None:
            return set()
        data = b""
        try:
            while chunk := os.read(self.cancel_fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        return {line for line in data.decode(errors="replace").split("\n") if line}
