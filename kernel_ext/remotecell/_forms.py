"""The calling forms of a function beyond one call: ``.spawn``/``.spawn_map`` and ``.map``/``.starmap``/``.for_each``.

Each form only shapes its inputs and results; sending and receiving are
``_invocation``'s (``spawn``, ``spawn_aio``, ``fanout``), whose targets a
``Function`` resolves (registering itself when needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.messages.jobs import SpawnEntry

from . import _bridge, _cache_note, _invocation, _map, _progress, _retry, calls

SPAWN_PER_MESSAGE = 500  # spawn_map sends its inputs in messages of this many
SPAWN_MESSAGES_IN_FLIGHT = 4

Resolve = Callable[[], _invocation.Target]
ResolveAio = Callable[[], Awaitable[_invocation.Target]]


def _length(iterables: Sequence[Iterable[Any]]) -> int | None:
    """How many calls zipping ``iterables`` makes, when they all know their length."""
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass
class _PendingSpawns:
    accepted: asyncio.Future[None]
    items: list[tuple[SpawnEntry, framing.Payload]] = dataclasses.field(default_factory=list)


def _flatten(batches: Iterator[list[Any]], noting: contextlib.AbstractContextManager[None]) -> Iterator[Any]:
    with noting:
        try:
            for batch in batches:
                yield from batch
        finally:
            batches.close()  # type: ignore[attr-defined]  # stops the map when the caller stops early


class SpawnForms:
    """``.spawn``, ``.spawn.aio`` and ``.spawn_map`` of one function."""

    def __init__(self, name: str, resolve: Resolve, resolve_aio: ResolveAio) -> None:
        self.name = name
        self.resolve = resolve  # looked at again for each send: after a restart, the app registers again
        self.resolve_aio = resolve_aio
        # spawn.aio calls of one event-loop turn, sent together after it (one message, one commit)
        self._pending_spawns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PendingSpawns] = (
            weakref.WeakKeyDictionary())

    def _spawn_payload(self, args: tuple, kwargs: dict) -> framing.Payload:
        return _invocation.spawn_payload(self.name, args, kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> calls.FunctionCall:
        """Start the function remotely and return at once with a handle on the call.

        The runtime writes the input to its job store before this returns; the
        result is kept (7 days by default) for ``call.get()`` from any process.

        >>> call = square.spawn(4)
        >>> call.get()
        16
        """
        call_id, payload = calls.new_call_id(), self._spawn_payload(args, kwargs)
        _invocation.spawn(self.resolve, [SpawnEntry(id=call_id)], [payload])
        return calls.FunctionCall(call_id, self.name)

    async def spawn_aio(self, *args: Any, **kwargs: Any) -> calls.FunctionCall:
        call_id, payload = calls.new_call_id(), self._spawn_payload(args, kwargs)
        loop = asyncio.get_running_loop()
        pending = self._pending_spawns.get(loop)
        if pending is None:
            pending = self._pending_spawns[loop] = _PendingSpawns(loop.create_future())
            loop.call_soon(self._send_pending_spawns, loop, pending)
        pending.items.append((SpawnEntry(id=call_id), payload))
        await asyncio.shield(pending.accepted)  # one caller giving up does not unsend the others
        return calls.FunctionCall(call_id, self.name)

    def _send_pending_spawns(self, loop: asyncio.AbstractEventLoop, pending: _PendingSpawns) -> None:
        self._pending_spawns.pop(loop, None)

        async def send() -> None:
            try:
                for start in range(0, len(pending.items), SPAWN_PER_MESSAGE):
                    await self._spawn_many(pending.items[start:start + SPAWN_PER_MESSAGE])
            except BaseException as exc:
                pending.accepted.set_exception(exc)
                pending.accepted.exception()  # mark it seen: every waiter may have gone
                return
            pending.accepted.set_result(None)

        asyncio.ensure_future(send())

    async def _spawn_many(self, items: list[tuple[SpawnEntry, framing.Payload]]) -> None:
        await _invocation.spawn_aio(self.resolve_aio, [entry for entry, _ in items], [payload for _, payload in items])

    async def spawn_map_aio(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                             ) -> calls.FunctionCallGroup:
        """Spawn one call per item (as ``map``), and return one handle for all of them.

        >>> group = square.spawn_map(range(1000))
        >>> group.get(index=7), group.status()
        (49, {'succeeded': 1000})
        """
        group_id, count = calls.new_group_id(), 0
        chunk: list[tuple[SpawnEntry, framing.Payload]] = []
        sending: set[asyncio.Task[None]] = set()  # a few messages in flight: pickling overlaps the runtime's writes
        try:
            for args in zip(*iterables, strict=False):
                entry = SpawnEntry(id=f"{group_id}.{count}", group=group_id, index=count)
                chunk.append((entry, self._spawn_payload(tuple(args), kwargs or {})))
                count += 1
                if len(chunk) == SPAWN_PER_MESSAGE:
                    sending.add(asyncio.ensure_future(self._spawn_many(chunk)))
                    chunk = []
                if len(sending) >= SPAWN_MESSAGES_IN_FLIGHT:
                    done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
            if chunk:
                sending.add(asyncio.ensure_future(self._spawn_many(chunk)))
            for task in sending:
                await task
        finally:
            for task in sending:
                task.cancel()
        return calls.FunctionCallGroup(group_id, count, self.name)


class MapForms:
    """``.map``, ``.starmap`` and ``.for_each`` of one function, each with ``.aio``."""

    def __init__(self, name: str, resolve_aio: ResolveAio, cached: Callable[[], bool]) -> None:
        self.name = name
        self.resolve_aio = resolve_aio
        self.cached = cached  # whether the function is cache=True (asked when a map starts)

    async def _calls_aio(self, arg_tuples: Iterable[Sequence[Any]], kwargs: dict[str, Any] | None = None,
                         order_outputs: bool = True, return_exceptions: bool = False,
                         progress: bool | None = None, total: int | None = None,
                         _form: str = "map") -> AsyncIterator[list[Any]]:
        """One remote call per tuple of arguments; lists of results as they finish (in input order by default).

        ``_form`` names the progress view: ``square.map``, ``square.starmap``, ``square.for_each``."""
        fanout = _invocation.fanout(await self.resolve_aio())
        meter = _progress.Progress(f"{self.name}.{_form}", total, progress)
        if return_exceptions:
            meter.retry = self._retry_from_view
        async for values in _map.run(fanout, arg_tuples, kwargs or {}, order_outputs, return_exceptions, meter,
                                     self.name):
            yield values

    def _noting(self) -> contextlib.AbstractContextManager[None]:
        """A ``cache=True`` function's map says its cache hits once, where its caller iterates (its cell)."""
        return _cache_note.collecting(self.name) if self.cached() else contextlib.nullcontext()

    def _map_batches(self, *iterables: Iterable[Any], **options: Any) -> AsyncIterator[list[Any]]:
        return self._calls_aio(zip(*iterables, strict=False), total=_length(iterables), **options)  # shortest wins

    def _starmap_batches(self, items: Iterable[Sequence[Any]], **options: Any) -> AsyncIterator[list[Any]]:
        return self._calls_aio(items, total=_length([items]), **{"_form": "starmap", **options})

    async def map_aio(self, *iterables: Iterable[Any], **options: Any) -> AsyncIterator[Any]:
        with self._noting():
            async for values in self._map_batches(*iterables, **options):
                for value in values:
                    yield value

    async def starmap_aio(self, items: Iterable[Sequence[Any]], **options: Any) -> AsyncIterator[Any]:
        with self._noting():
            async for values in self._starmap_batches(items, **options):
                for value in values:
                    yield value

    def map(self, *iterables: Iterable[Any], **options: Any) -> Iterator[Any]:
        """``f.map(xs, ys)`` calls ``f(x, y)`` for each pair; results in input order.

        Options: ``kwargs={...}`` for every call, ``order_outputs=False``, ``return_exceptions=True``,
        ``progress=True/False`` (default: a progress line on a terminal, a widget in a notebook).

        >>> list(square.map(range(5)))
        [0, 1, 4, 9, 16]
        """
        return _flatten(_bridge.iterate(self._map_batches(*iterables, **options)), self._noting())

    def starmap(self, items: Iterable[Sequence[Any]], **options: Any) -> Iterator[Any]:
        """``f.starmap([(1, 2), (3, 4)])`` calls ``f(1, 2)`` and ``f(3, 4)``."""
        return _flatten(_bridge.iterate(self._starmap_batches(items, **options)), self._noting())

    async def retry_failed_aio(self, results: Iterable[Any], progress: bool | None = None) -> list[Any]:
        """Run again only the inputs that failed in ``results``; the whole list back, merged in order.

        ``results`` is what ``map``/``starmap`` with ``return_exceptions=True`` returned (as a list, or
        any iterable): each failure there remembers its input. Values, and exceptions the function
        returned rather than raised, stay as they are; an input that fails again is its new exception,
        which a later ``retry_failed`` runs again. Outcomes the map widget's "Retry failed" button
        already got are merged without running them again.

        >>> results = list(flaky.map(range(100), return_exceptions=True))
        >>> results = flaky.retry_failed(results)   # reruns the failed ones only
        """
        merged, todo = _retry.plan(self.name, results)
        for group in _retry.by_kwargs(todo):
            outcomes: list[Any] = []
            async for values in self._calls_aio([failed.args for _, failed in group], group[0][1].kwargs,
                                                return_exceptions=True, progress=progress, total=len(group)):
                outcomes += values
            for (position, failed), value in zip(group, outcomes, strict=True):
                failed.retried = value
                merged[position] = value
        return merged

    def retry_failed(self, results: Iterable[Any], progress: bool | None = None) -> list[Any]:
        return _bridge.run(self.retry_failed_aio(results, progress=progress))

    def _retry_from_view(self, failures: list[BaseException]) -> list[Any]:
        """The map widget's button: rerun ``failures``, each outcome recorded on its failure."""
        merged = self.retry_failed(failures, progress=False)
        return [_retry.latest(value) for value in merged]

    def for_each(self, *iterables: Iterable[Any], ignore_exceptions: bool = False, **options: Any) -> None:
        """Call ``f`` on every item for its effects; results are dropped."""
        for _ in self.map(*iterables, return_exceptions=ignore_exceptions, order_outputs=False, _form="for_each",
                          **options):
            pass

    async def for_each_aio(self, *iterables: Iterable[Any], ignore_exceptions: bool = False,
                            **options: Any) -> None:
        async for _ in self.map_aio(*iterables, return_exceptions=ignore_exceptions, order_outputs=False,
                                     _form="for_each", **options):
            pass
