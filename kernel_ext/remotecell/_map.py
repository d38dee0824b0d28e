"""Fan-out: many inputs of one function through one channel, many to a message, results as they finish.

At most ``MAX_INFLIGHT`` inputs are out at once, counting those finished but
held back for their turn, so the input iterator is read only as fast as results
are consumed: a map over an endless generator runs in bounded memory.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from remotecell_runtime.protocol import framing, sharedmem
from remotecell_runtime.protocol.messages.session import ErrorReply

from . import _client, _progress, _retry

MAX_INFLIGHT = 1000  # inputs of one map on the runtime (or done and waiting for their turn) at once
PER_MESSAGE = 256  # inputs in one `calls` message: the first results come back while the rest are pickled

ArgsPayload = Callable[[tuple, dict], framing.Payload]
CallsFrames = Callable[[list[framing.Entry], str], list[framing.Frame]]  # _invocation's: a `calls` message


class _Outcomes:
    """Replies to a map's inputs, in arrival order, and a wake-up for the loop that consumes them."""

    def __init__(self) -> None:
        self.arrived: collections.deque[tuple[dict[str, Any], list[framing.Payload]]] = collections.deque()
        self.event = asyncio.Event()
        self.error: BaseException | None = None  # the runtime went away meanwhile

    def deliver(self, header: dict[str, Any], payloads: list[framing.Payload]) -> None:
        self.arrived.append((header, payloads))
        self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()

    async def wait(self) -> None:
        while not self.arrived:
            if self.error is not None:
                raise self.error
            self.event.clear()
            await self.event.wait()


class Fanout:
    """One map's inputs on the runtime: sends them, routes their results, cancels what is left."""

    def __init__(self, conn: _client.Connection, calls_frames: CallsFrames, args_payload: ArgsPayload) -> None:
        self.conn = conn
        self.channel = conn.async_channel()
        self.calls_frames = calls_frames  # the call pipeline's (_invocation): how a `calls` message is made
        self.args_payload = args_payload
        self.outcomes = _Outcomes()
        self.unwatch = self.channel.watch(self.outcomes.fail)
        self.pending: dict[str, int] = {}  # input id -> its index in the map
        self.output = _client.output_here()  # the map's output goes where it was called (its notebook cell)

    async def send(self, items: list[tuple[int, Sequence[Any]]], kwargs: dict[str, Any]) -> None:
        new_id, args_payload, pending, waiting = self.conn.new_id, self.args_payload, self.pending, self.channel.waiting
        route = (self.outcomes.deliver, self.output)
        for start in range(0, len(items), PER_MESSAGE):
            entries = []
            for index, args in items[start:start + PER_MESSAGE]:  # once per input: kept lean
                input_id = new_id()
                entries.append(({"id": input_id}, [args_payload(tuple(args), kwargs)]))
                pending[input_id] = index
                waiting[input_id] = route
            message_id = self.conn.new_id()  # a refused message comes back under this id
            self.channel.waiting[message_id] = (self.outcomes.deliver, None)
            frames = self.calls_frames(entries, message_id)
            await self.channel.sock.send_multipart(frames, copy=False)

    async def finished(self) -> list[tuple[int, Any, bool]]:
        """Wait for results; return ``(index, value or exception, ok)`` for each that arrived."""
        await self.outcomes.wait()
        out = []
        while self.outcomes.arrived:
            header, payloads = self.outcomes.arrived.popleft()
            if header.get("t") == "error":  # the runtime refused a whole message
                raise _client.error_from(ErrorReply.from_wire(header).error, payloads)
            index = self.pending.pop(header["id"], None)
            self.channel.waiting.pop(header["id"], None)
            if index is None:
                sharedmem.discard(payloads)
                continue
            try:
                out.append((index, _client.result_value(header, payloads), True))
            except Exception as exc:
                out.append((index, exc, False))
        return out

    async def cancel_rest(self) -> int:
        """Cancel the inputs still out; how many there were."""
        self.unwatch()
        for input_id in self.pending:
            self.channel.waiting.pop(input_id, None)
        count = len(self.pending)
        if count:
            await self.channel.send(_client.cancel_header(self.conn, list(self.pending)))
            self.pending.clear()
        return count


async def run(fanout: Fanout, arg_tuples: Iterable[Sequence[Any]], kwargs: dict[str, Any], order_outputs: bool,
              return_exceptions: bool, meter: _progress.Progress, function: str = "") -> AsyncIterator[list[Any]]:
    """Results of one call per tuple of arguments, as they finish (in input order by default).

    They come in lists, all that are ready at once, so that a blocking caller
    crosses the event-loop bridge once per batch rather than once per result.
    Without ``return_exceptions`` the first failure raises and cancels the rest;
    so does an error of the input iterator, or the caller stopping early. With it,
    each failure remembers its input (``_retry``: ``function.retry_failed``), and
    the meter keeps the failures for its view's retry button.
    """
    inputs = enumerate(arg_tuples)
    held: dict[int, Any] = {}  # done, waiting for their turn (ordered outputs)
    args_of: dict[int, Sequence[Any]] = {}  # the inputs out, while failures are returned: what a retry reruns
    next_index = 0
    exhausted = interrupted = False
    try:
        while True:
            room = MAX_INFLIGHT - len(fanout.pending) - len(held)
            if not exhausted and (room >= PER_MESSAGE or (room > 0 and not fanout.pending)):
                items = list(itertools.islice(inputs, room))
                exhausted = len(items) < room
                if return_exceptions:
                    args_of.update(items)
                await fanout.send(items, kwargs)
                meter.submitted += len(items)
            if not fanout.pending:
                return
            ready = []
            for index, value, ok in await fanout.finished():
                args = args_of.pop(index, ())
                if not ok and return_exceptions:
                    _retry.remember(value, function, args, kwargs)
                    meter.keep_failure(value)
                meter.advance(ok)
                if not ok and not return_exceptions:
                    raise value
                if order_outputs:
                    held[index] = value
                else:
                    ready.append(value)
            while next_index in held:
                ready.append(held.pop(next_index))
                next_index += 1
            if ready:
                yield ready
    except asyncio.CancelledError:  # Ctrl-C in a blocking caller, or a cancelled task
        interrupted = True
        raise
    finally:
        cancelled = await fanout.cancel_rest()
        meter.close()
        if interrupted and cancelled:
            print(f"remotecell: interrupted; cancelled the {cancelled} remote inputs of {meter.label} still running",
                  file=sys.stderr)
