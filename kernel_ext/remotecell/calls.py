"""Handles on spawned calls: fetch results later, from this process or any other.

``f.spawn(x)`` returns a :class:`FunctionCall` once the runtime has written the
input to its job store; ``f.spawn_map(xs)`` returns one :class:`FunctionCallGroup`
for all its inputs.  Both are named by an id that any process connected to the
same runtime can turn back into a handle with ``rc.FunctionCall.from_id``.

The session inbox lives here too: ``rc.calls(since="1d")`` lists every spawned call
(and scheduled run) the job store knows, across kernel restarts, as ``CallInfo``s
(state, function, start, duration, ``reattach()``, ``snippet``). It answers to this
module's own name: the module is callable (``CallsModule``).

>>> for info in rc.calls(since="1d"):
...     print(info)     # fc-…  train  succeeded  started 2026-12-06 09:12:03, took 4 min 10 s
>>> rc.calls(since="2h")[0].reattach().get()
"""

from __future__ import annotations

import asyncio
import datetime
import re
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from remotecell_runtime.protocol import ids
from remotecell_runtime.protocol.message import Message
from remotecell_runtime.protocol.messages.jobs import (
    CallCancelMsg,
    CallGetMsg,
    CallLogsMsg,
    CallLogsReply,
    CallsRecentMsg,
    CallsRecentReply,
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


# -- the session inbox: rc.calls(since="1d") ----------------------------------------------------

MAX_CALLS = 500  # what the runtime lists at most
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

Since = str | datetime.datetime | datetime.timedelta | None


def since_timestamp(since: Since, now: datetime.datetime | None = None) -> float | None:
    """``since`` as Unix time: ``"30m"``, ``"2h"``, ``"1d"``, ``"1w"`` back from now, a ``timedelta`` back, or
    a ``datetime`` (naive: local time); None: no bound.

    >>> since_timestamp("1h") == (datetime.datetime.now() - datetime.timedelta(hours=1)).timestamp()  # ~
    """
    now = now or datetime.datetime.now().astimezone()
    if since is None:
        return None
    if isinstance(since, datetime.datetime):
        return since.timestamp()
    if isinstance(since, datetime.timedelta):
        if since < datetime.timedelta(0):
            raise InvalidError(f"since={since!r}: give how far back to look, a timedelta >= 0")
        return (now - since).timestamp()
    if isinstance(since, str):
        found = _SPAN.match(since)
        if found:
            return now.timestamp() - float(found.group(1)) * _UNIT_S[found.group(2)]
    raise InvalidError(f"since={since!r}: give a span such as '30m', '2h', '1d' or '1w', a timedelta, or a datetime")


@dataclass(frozen=True)
class CallInfo:
    """One spawned call as the runtime's job store has it (``rc.calls()``)."""

    object_id: str
    function: str
    state: str  # queued, running, succeeded, failed, cancelled, expired
    start: datetime.datetime
    end: datetime.datetime | None
    attempts: int
    error_type: str | None = None
    group: str | None = None  # the spawn_map it belongs to
    reason: str | None = None  # why it waits, while queued

    @classmethod
    def from_wire(cls, row: dict[str, Any]) -> CallInfo:
        finished = row.get("finished_at")
        return cls(object_id=row["id"], function=row["function"], state=row["state"],
                   start=_local(row["created_at"]), end=_local(finished) if finished else None,
                   attempts=int(row.get("attempts") or 1), error_type=row.get("error_type"),
                   group=row.get("group"), reason=row.get("reason"))

    @property
    def duration(self) -> datetime.timedelta:
        """How long it took, or has taken so far."""
        end = self.end or datetime.datetime.now().astimezone()
        return max(end - self.start, datetime.timedelta(0))

    @property
    def snippet(self) -> str:
        """The code that fetches it into any kernel or script on this runtime."""
        return f'call = rc.FunctionCall.from_id("{self.object_id}")  # {self.function}; call.get() for its result'

    def reattach(self) -> FunctionCall:
        """A handle on this call in this process: ``.get()``, ``.status()``, ``.logs()``, ``.cancel()``."""
        return FunctionCall(self.object_id, self.function)

    def get(self, timeout: float | None = None) -> Any:
        """Its result (or its exception, raised here), as ``reattach().get(timeout)``."""
        return self.reattach().get(timeout=timeout)

    def line(self) -> str:
        took = "took" if self.end is not None else "for"
        return (f"{self.object_id}  {self.function}  {self.state}  started {self.start:%Y-%m-%d %H:%M:%S}, "
                f"{took} {_span(self.duration)}")

    def __str__(self) -> str:
        return self.line()


class CallList(list[CallInfo]):
    """What ``rc.calls()`` returns: a list, shown one call to a line (newest first)."""

    def __repr__(self) -> str:
        if not self:
            return "no spawned calls"
        return "\n".join(info.line() for info in self)


async def _calls_aio(since: Since = "1d", limit: int = 100) -> CallList:
    """The spawned calls made since ``since`` (default the last day), newest first, at most ``limit``.

    >>> calls = rc.calls(since="1d")            # also since=datetime or timedelta; await rc.calls.aio()
    >>> calls[0].state, calls[0].function, calls[0].start, calls[0].duration
    >>> calls[0].reattach().get()               # the result, in this kernel
    >>> print(calls[0].snippet)                 # call = rc.FunctionCall.from_id("fc-…")
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CALLS:
        raise InvalidError(f"limit={limit!r}: give a number of calls from 1 to {MAX_CALLS}")
    bound = since_timestamp(since)
    reply, _ = await _request(CallsRecentMsg(limit=limit, since=bound))
    return CallList(CallInfo.from_wire(row) for row in CallsRecentReply.from_wire(reply).calls)


inbox = twin(_calls_aio)


def _local(unix_s: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(unix_s).astimezone()


def _span(delta: datetime.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class CallsModule(types.ModuleType):
    """This module, callable: ``rc.calls(since="1d")`` is the session inbox (``inbox.calls``), and
    ``rc.calls.aio`` its async form. The module's own name is ``calls`` (the handles live here), so the inbox's
    entry point answers to the same name rather than shadowing it."""

    def __call__(self, since: Since = "1d", limit: int = 100) -> CallList:
        return inbox(since, limit)

    @property
    def aio(self) -> Any:
        return inbox.aio


sys.modules[__name__].__class__ = CallsModule
