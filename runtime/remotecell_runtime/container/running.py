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
import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from ..protocol import framing, pickling, sharedmem
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from .direct import DirectLease
from .inputs import CURRENT, Cancelled, Returned, Terminated, Work, describe_error, outcome_of, type_name
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

    def on_calls(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        for entry, own in framing.split_many(header, payloads):
            self.on_call(entry, own)

    def on_call(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        method = self.loaded.methods.get(header.get("m"))
        if method is None:
            result = {"t": "result", "id": header["id"], "status": "error"}
            self.finish(header["id"], payloads, result, describe_error(result, self.loaded.no_method(header)))
            return
        self.start(method, self._run_async, self.run_sync, self.backlog.append, header, payloads)

    def start(self, method: Callable[..., Any], run_async: Callable[..., Any], run_sync: Callable[..., None],
              inline: Callable[[Work], None], header: dict[str, Any], payloads: list[Payload]) -> None:
        """Run an input (or a batch) where its function runs: the event loop, a worker thread, or ``inline``."""
        if header.get("m") in self.loaded.loop_methods:  # known at load
            import asyncio

            assert self.loaded.loop is not None
            asyncio.run_coroutine_threadsafe(run_async(method, header, payloads), self.loaded.loop)
        elif self.loaded.threads is not None:
            self.loaded.threads.submit(run_sync, method, header, payloads)
        else:
            inline((header, payloads))

    def run_sync(self, method: Callable[..., Any], header: dict[str, Any], payloads: list[Payload]) -> None:
        input_id = header["id"]
        token = CURRENT.set(input_id)
        self.running_inputs[input_id] = threading.get_ident()
        started_s = time.perf_counter()
        try:
            if input_id in self.cancelled:
                raise Cancelled()
            args, kwargs = pickling.deserialize(payloads[0], hold=True)
            value = method(*args, **kwargs)
            outcome: Any = Returned(self._send_items(header, value) if header.get("gen") else value)
        except Terminated:
            raise
        except BaseException as exc:
            outcome = exc
        finally:
            self.running_inputs.pop(input_id, None)
            self.cancelled.discard(input_id)
        header["us"] = int((time.perf_counter() - started_s) * 1e6)
        try:
            self._report(header, payloads, outcome)
        finally:
            CURRENT.reset(token)

    async def _run_async(self, method: Callable[..., Any], header: dict[str, Any], payloads: list[Payload]) -> None:
        import asyncio

        CURRENT.set(header["id"])  # this task's own context
        self.running_inputs[header["id"]] = asyncio.current_task()
        try:
            outcome = await outcome_of(self._call_async(method, header, payloads))
        finally:
            self.running_inputs.pop(header["id"], None)
            self.cancelled.discard(header["id"])
        self._report(header, payloads, outcome)

    async def _call_async(self, method: Callable[..., Any], header: dict[str, Any], payloads: list[Payload]) -> Any:
        import asyncio

        if header["id"] in self.cancelled:
            raise asyncio.CancelledError()
        args, kwargs = pickling.deserialize(payloads[0], hold=True)
        if inspect.isasyncgenfunction(method):
            return await self._send_async_items(header, method(*args, **kwargs))
        return await method(*args, **kwargs)

    def _send_items(self, header: dict[str, Any], items: Any) -> int:
        """``remote_gen``: each item the generator yields goes to the caller at once; returns how many."""
        if not inspect.isgenerator(items):
            raise TypeError(f"remote_gen needs a generator function; this one returned {type_name(items)} "
                            "(call it with .remote())")
        count = 0
        for item in items:
            self._send_item(header, count, item)
            count += 1
        return count

    async def _send_async_items(self, header: dict[str, Any], items: Any) -> int:
        if not header.get("gen"):
            raise TypeError("this is an async generator function: call it with .remote_gen()")
        count = 0
        async for item in items:
            self._send_item(header, count, item)
            count += 1
        return count

    def _send_item(self, header: dict[str, Any], index: int, item: Any) -> None:
        input_id = header["id"]
        flush_output(input_id)  # what it printed before this item comes first
        use_shm = bool(header.get("shm")) and sharedmem.ShmPool.available()
        payload = pickling.serialize(item, self.shm if use_shm else None)
        self.outbox.send({"t": "item", "id": input_id, "i": index}, [payload])

    def _report(self, header: dict[str, Any], payloads: list[Payload], outcome: Any) -> None:
        input_id = header["id"]
        result = {"t": "result", "id": input_id, "us": header.get("us", 0)}
        if isinstance(outcome, Returned):
            self.succeed(result, header, payloads, outcome.value)
        elif isinstance(outcome, Cancelled):
            self.finish(input_id, payloads, dict(result, status="cancelled"))
        else:
            self.finish(input_id, payloads, result, describe_error(result, outcome))

    def succeed(self, result: dict[str, Any], header: dict[str, Any], payloads: list[Payload], value: Any) -> None:
        use_shm = bool(header.get("shm")) and sharedmem.ShmPool.available()
        try:
            payload = pickling.serialize(value, self.shm if use_shm else None)
        except BaseException as exc:
            message = f"the return value of type {type_name(value)} cannot be pickled: {exc}"
            error = {"type": ErrorName.SERIALIZATION, "message": message, "traceback": ""}
            self.finish(result["id"], payloads, dict(result, status="error", error=error))
            return
        self.finish(result["id"], payloads, dict(result, status="ok"), [payload])

    def finish(self, input_id: str, inputs: list[Payload], header: dict[str, Any],
               payloads: list[Payload] | None = None) -> None:
        flush_output(input_id)
        # The input's shared memory is ours only when it succeeded; else the runtime may retry it.
        self.shm.settle(inputs[0].shm if inputs else [], keep=header["status"] == "ok")
        outbox = self.outbox
        if input_id in outbox.direct_peers:
            outbox.on_io(functools.partial(self.lease.done, header, payloads or []))
        elif threading.get_ident() == outbox.io_thread:  # the serve loop sends these, many to a message
            header.pop("t", None)
            outbox.results.append((header, payloads or []))
        else:
            outbox.send(header, payloads or ())
