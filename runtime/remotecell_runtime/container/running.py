"""Running one input where its function runs, and reporting what it came to.

``start`` places an input: an ``async def`` (or async generator) method as a task on
the event loop thread, any other on a worker thread when ``max_inputs`` > 1, else
``inline`` (the backlog, run one at a time on the I/O thread by the serve loop; a
leaseholder's direct call runs there at once).  A generator's items go to the caller
as they come (``item``), then the count as its result.  ``finish`` is every input's
one way out: its output flushed first, its shared memory settled, then the result to
the leaseholder (a direct call), into ``Outbox.results`` (on the I/O thread: sent many
to a message) or sent at once (from a worker thread or the event loop).
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from ..protocol import framing, pickling, sharedmem
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.messages.calls import CallMsg, CallsMsg, ItemMsg, ResultMsg
from ..protocol.messages.session import ErrorInfo
from .direct import DirectLease
from .inputs import CURRENT, Call, Cancelled, Returned, Terminated, Work, describe_error, outcome_of, type_name
from .loading import Loaded
from .outbox import Outbox
from .streams import flush_output


class Runner:
    """Runs inputs (``call``/``calls``) and reports their results; keeps what runs, what waits, what was cancelled."""

    def __init__(self, outbox: Outbox, loaded: Loaded, lease: DirectLease, shm: sharedmem.ShmPool) -> None:
        self.outbox = outbox
        self.loaded = loaded
        self.lease = lease
        self.shm = shm
        self.running_inputs: dict[str, Any] = {}  # input id -> thread ident or asyncio task
        self.backlog: collections.deque[Work] = collections.deque()  # inline inputs not started yet
        self.cancelled: set[str] = set()  # cancelled before they started: skip them
        self.hold: Callable[[BaseException], tuple[str, float]] = lambda exc: ("", 0.0)  # debugging.Holds sets it

    def on_calls(self, msg: CallsMsg, payloads: list[Payload]) -> None:
        shared = msg.method is not None or msg.shm  # the daemon says both per entry; a client might not
        for entry, own in framing.pair(msg.entries, payloads):
            call: Call = entry if not shared else CallMsg(id=entry.id, method=entry.method or msg.method,
                                                          shm=entry.shm or msg.shm, gen=entry.gen, web=entry.web)
            self.on_call(call, own)

    def on_call(self, msg: Call, payloads: list[Payload]) -> None:
        method = self.loaded.methods.get(msg.method)
        if method is None:
            self.fail(msg.id, payloads, self.loaded.no_method(msg.method))
            return
        self.start(method, msg.method, self._run_async, self.run_sync, self.backlog.append, msg, payloads)

    def start(self, method: Callable[..., Any], name: str | None, run_async: Callable[..., Any],
              run_sync: Callable[..., None], inline: Callable[[Any], None], msg: Any, payloads: list[Payload],
              ) -> None:
        """Run an input (or a batch) of method ``name`` where it runs: the event loop, a worker thread, or
        ``inline`` (given ``(msg, payloads)``)."""
        if name in self.loaded.loop_methods:  # known at load
            import asyncio

            assert self.loaded.loop is not None
            asyncio.run_coroutine_threadsafe(run_async(method, msg, payloads), self.loaded.loop)
        elif self.loaded.threads is not None:
            self.loaded.threads.submit(run_sync, method, msg, payloads)
        else:
            inline((msg, payloads))

    def run_sync(self, method: Callable[..., Any], msg: Call, payloads: list[Payload]) -> None:
        input_id = msg.id
        token = CURRENT.set(input_id)
        self.running_inputs[input_id] = threading.get_ident()
        started_s = time.perf_counter()
        try:
            if input_id in self.cancelled:
                raise Cancelled()
            args, kwargs = pickling.deserialize(payloads[0], hold=True)
            value = method(*args, **kwargs)
            outcome: Any = Returned(self._send_items(msg, value) if msg.gen else value)
        except Terminated:
            raise
        except BaseException as exc:
            outcome = exc
        finally:
            self.running_inputs.pop(input_id, None)
            if self.cancelled:  # seldom anything: no call then
                self.cancelled.discard(input_id)
        run_us = int((time.perf_counter() - started_s) * 1e6)
        try:
            self._report(msg, payloads, outcome, run_us)
        finally:
            CURRENT.reset(token)

    async def _run_async(self, method: Callable[..., Any], msg: Call, payloads: list[Payload]) -> None:
        import asyncio

        CURRENT.set(msg.id)  # this task's own context
        self.running_inputs[msg.id] = asyncio.current_task()
        try:
            outcome = await outcome_of(self._call_async(method, msg, payloads))
        finally:
            self.running_inputs.pop(msg.id, None)
            self.cancelled.discard(msg.id)
        self._report(msg, payloads, outcome, 0)  # the loop interleaves tasks: no run time of its own

    async def _call_async(self, method: Callable[..., Any], msg: Call, payloads: list[Payload]) -> Any:
        import asyncio

        if msg.id in self.cancelled:
            raise asyncio.CancelledError()
        if msg.web is not None:  # an HTTP request to a web endpoint: bytes in, web_out messages back
            return await method(msg, payloads)
        if msg.method in self.loaded.webs:
            raise TypeError("this function is a web endpoint: send it HTTP requests at its URL (f.get_web_url())")
        args, kwargs = pickling.deserialize(payloads[0], hold=True)
        if inspect.isasyncgenfunction(method):
            return await self._send_async_items(msg, method(*args, **kwargs))
        return await method(*args, **kwargs)

    def _send_items(self, msg: Call, items: Any) -> int:
        """``remote_gen``: each item the generator yields goes to the caller at once; returns how many."""
        if not inspect.isgenerator(items):
            raise TypeError(f"remote_gen needs a generator function; this one returned {type_name(items)} "
                            "(call it with .remote())")
        count = 0
        for item in items:
            self._send_item(msg, count, item)
            count += 1
        return count

    async def _send_async_items(self, msg: Call, items: Any) -> int:
        if not msg.gen:
            raise TypeError("this is an async generator function: call it with .remote_gen()")
        count = 0
        async for item in items:
            self._send_item(msg, count, item)
            count += 1
        return count

    def _send_item(self, msg: Call, index: int, item: Any) -> None:
        flush_output(msg.id)  # what it printed before this item comes first
        use_shm = msg.shm and sharedmem.ShmPool.available()
        payload = pickling.serialize(item, self.shm if use_shm else None)
        self.outbox.send(ItemMsg(id=msg.id, index=index), [payload])

    def _report(self, msg: Call, payloads: list[Payload], outcome: Any, run_us: int) -> None:
        if isinstance(outcome, Returned):
            self.succeed(ResultMsg(id=msg.id, run_us=run_us), msg.shm, payloads, outcome.value)
        elif isinstance(outcome, Cancelled):
            self.finish(payloads, ResultMsg(id=msg.id, status="cancelled", run_us=run_us))
        else:
            self.fail(msg.id, payloads, outcome, run_us, hold=msg.web is None)  # (no one debugs an HTTP request)

    def fail(self, input_id: str, payloads: list[Payload], exc: BaseException, run_us: int = 0,
             hold: bool = True) -> None:
        """Input ``input_id`` raised ``exc``: its error result, with the exception when it pickles (its frames held
        for a post-mortem first: ``describe_error`` drops the traceback)."""
        debug, hold_s = self.hold(exc) if hold else ("", 0.0)
        error, error_payloads = describe_error(exc)
        error.debug, error.debug_hold_s = debug, hold_s
        self.finish(payloads, ResultMsg(id=input_id, status="error", error=error, run_us=run_us), error_payloads)

    def succeed(self, result: ResultMsg, shm: bool, payloads: list[Payload], value: Any) -> None:
        """``result`` (an input's id and run time) with ``value``, in shared memory when its caller takes it."""
        use_shm = shm and sharedmem.ShmPool.available()
        try:
            payload = pickling.serialize(value, self.shm if use_shm else None)
        except BaseException as exc:
            message = f"the return value of type {type_name(value)} cannot be pickled: {exc}"
            result.status, result.error = "error", ErrorInfo(type=ErrorName.SERIALIZATION, message=message)
            self.finish(payloads, result)
            return
        result.status = "ok"
        self.finish(payloads, result, [payload])

    def finish(self, inputs: list[Payload], result: ResultMsg, payloads: list[Payload] | None = None) -> None:
        """Every input's one way out: its output first, its shared memory settled, then ``result`` to its caller."""
        flush_output(result.id)
        if inputs and inputs[0].shm:  # ours only when the input succeeded; else the runtime may retry it
            self.shm.settle(inputs[0].shm, keep=result.status == "ok")
        outbox = self.outbox
        if result.id in outbox.direct_peers:
            outbox.on_io(self.lease.done, result, payloads or [])
        elif threading.get_ident() == outbox.io_thread:  # the serve loop sends these, many to a message
            outbox.results.append((result, payloads or []))
        else:
            outbox.send(result, payloads or ())
