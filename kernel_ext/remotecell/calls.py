"""Handles on spawned calls: fetch results later, from this process or any other.

``f.spawn(x)`` returns a :class:`FunctionCall` once the runtime has written the
input to its job store; ``f.spawn_map(xs)`` returns one :class:`FunctionCallGroup`
for all its inputs.  Both are named by an id that any process connected to the
same runtime can turn back into a handle with ``rc.FunctionCall.from_id``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

from remotecell_runtime.protocol import ids
from remotecell_runtime.protocol.message import Message
from remotecell_runtime.protocol.messages.jobs import (
    CallCancelMsg,
    CallGetMsg,
    CallLogsMsg,
    CallLogsReply,
    CallStatusMsg,
    CallStatusReply,
    GroupStatusReply,
)

from . import _client, _views
from ._bridge import Twin, TwinMethod, twin
from .exceptions import InvalidError, RuntimeRestarted

LONG_POLL_S = 5.0  # one `get` request waits at most this long on the runtime, then asks again


def new_call_id() -> str:
    return ids.new_call_id("fc")


def new_group_id() -> str:
    return ids.new_call_id("fg")


async def _request(msg: Message) -> tuple[dict[str, Any], list[Any]]:
    """One request about spawned calls; sent again if the runtime restarts meanwhile (they are idempotent)."""
    while True:
        conn = _client.connection()
        try:
            return await conn.async_channel().roundtrip(conn.envelope(msg))
        except RuntimeRestarted:
            continue


class FunctionCall:
    """A spawned call.

    >>> call = square.spawn(4)          # returns once the runtime has saved the input
    >>> call.status()["state"]          # 'queued' (with a 'reason'), 'running', 'succeeded', ...
    >>> call.get(timeout=10)            # 16; TimeoutError if not done in time, timeout=0 polls
    >>> rc.FunctionCall.from_id(call.object_id).get()   # from any process
    >>> call.logs()                     # what it printed
    >>> call.cancel()
    """

    def __init__(self, object_id: str, function_name: str | None = None) -> None:
        self.object_id = object_id
        self.function_name = function_name

    @staticmethod
    def from_id(object_id: str) -> FunctionCall | FunctionCallGroup:
        """The handle of a spawned call (``fc-...``) or of a ``spawn_map`` (``fg-...``) by its id."""
        if not isinstance(object_id, str) or not object_id.startswith(("fc-", "fg-")):
            raise InvalidError(f"{object_id!r} is not a call id: ids look like 'fc-...' (spawn) or 'fg-...' "
                               "(spawn_map), as in call.object_id")
        if object_id.startswith("fg-"):
            return FunctionCallGroup(object_id)
        return FunctionCall(object_id)

    async def _get(self, timeout: float | None = None) -> Any:
        """The call's result (or its exception, raised here); builtin ``TimeoutError`` if not done in time."""
        if timeout is not None and timeout < 0:
            raise InvalidError(f"timeout={timeout!r}: give seconds >= 0, or None to wait as long as it takes")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left_s = LONG_POLL_S if deadline is None else min(LONG_POLL_S, deadline - time.monotonic())
                reply, payloads = await _request(CallGetMsg(call=self.object_id, timeout_s=max(left_s, 0.0)))
                if reply.get("t") == "result":
                    return _client.result_value(reply, payloads, self.function_name or self.object_id)
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"call {self.object_id} did not finish within {timeout:g} s; "
                                       "it goes on running (call.get() again, or call.cancel())")
        except asyncio.CancelledError:  # Ctrl-C: fire-and-forget means it keeps running
            print(f"remotecell: stopped waiting; call {self.object_id} keeps running (call.cancel() stops it)",
                  file=sys.stderr)
            raise

    get = TwinMethod(_get)

    async def _status(self) -> dict[str, Any]:
        """``state`` (queued, running, succeeded, failed, cancelled, expired), ``reason`` when queued, ``attempts``."""
        reply, _ = await _request(CallStatusMsg(call=self.object_id))
        return CallStatusReply.from_wire(reply).values()

    status = TwinMethod(_status)

    async def _cancel(self) -> None:
        """Stop the call: a queued input never runs, a running one is interrupted."""
        await _request(CallCancelMsg(calls=[self.object_id]))

    cancel = TwinMethod(_cancel)

    async def _logs(self) -> str:
        """What the call printed (stdout and stderr), so far."""
        reply, _ = await _request(CallLogsMsg(call=self.object_id))
        return CallLogsReply.from_wire(reply).text

    logs = TwinMethod(_logs)

    gather: Twin  # set below: FunctionCall.gather(*calls) and its .aio twin

    def __repr__(self) -> str:
        of = f" of {self.function_name}" if self.function_name else ""
        return f"<rc.FunctionCall {self.object_id}{of}>"

    def _ipython_display_(self) -> None:
        """In a notebook: a live view (state, elapsed, attempts, log tail, Cancel, result); elsewhere the repr."""
        _views.show(self)


async def _gather(*calls: FunctionCall) -> list[Any]:
    """Wait for every call; their results in order (the first failure raises).

    >>> rc.FunctionCall.gather(square.spawn(1), square.spawn(2))
    [1, 4]
    """
    return list(await asyncio.gather(*(c.get.aio() for c in calls)))


FunctionCall.gather = twin(_gather)


class FunctionCallGroup:
    """All the inputs of one ``spawn_map``, behind one id.

    >>> group = square.spawn_map(range(100))
    >>> group.status()              # {'succeeded': 40, 'running': 2, 'queued': 58}
    >>> group.get(index=3)          # 9
    >>> list(group)                 # every result, in input order
    >>> rc.FunctionCall.from_id(group.object_id)   # from any process
    """

    def __init__(self, object_id: str, count: int | None = None, function_name: str | None = None) -> None:
        self.object_id = object_id
        self.function_name = function_name
        self._count = count

    def call(self, index: int) -> FunctionCall:
        """The handle of one input."""
        if not isinstance(index, int) or index < 0 or index >= len(self):
            raise InvalidError(f"index={index!r}: this group has inputs 0..{len(self) - 1}")
        return FunctionCall(f"{self.object_id}.{index}", self.function_name)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(self.status().values())
        return self._count

    async def _get(self, index: int | None = None, timeout: float | None = None) -> Any:
        """One input's result (``index=i``), or all of them in order."""
        if index is not None:
            return await self.call(index).get.aio(timeout=timeout)
        return [await self.call(i).get.aio(timeout=timeout) for i in range(len(self))]

    get = TwinMethod(_get)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self.call(i).get()

    async def _status(self) -> dict[str, int]:
        """How many inputs are in each state."""
        reply, _ = await _request(CallStatusMsg(group=self.object_id))
        return GroupStatusReply.from_wire(reply).counts

    status = TwinMethod(_status)

    async def _cancel(self) -> None:
        await _request(CallCancelMsg(group=self.object_id))

    cancel = TwinMethod(_cancel)

    def __repr__(self) -> str:
        of = f" of {self.function_name}" if self.function_name else ""
        count = f", {self._count} inputs" if self._count is not None else ""
        return f"<rc.FunctionCallGroup {self.object_id}{of}{count}>"

    def _ipython_display_(self) -> None:
        """In a notebook: live counts per state as a bar, with Cancel; elsewhere the repr."""
        _views.show(self)
