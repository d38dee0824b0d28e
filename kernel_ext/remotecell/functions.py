"""Remote functions: registration by value and the calling forms."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from remotecell_runtime.protocol import framing

from . import _bridge, _client, _invocation, _map, _progress, calls
from ._bridge import Twin, twin
from .batching import BatchStats
from .exceptions import InvalidError
from .registration import Lookup, Registration, code_elsewhere

if TYPE_CHECKING:
    from .schedules import Schedule

SPAWN_PER_MESSAGE = 500  # spawn_map sends its inputs in messages of this many
SPAWN_MESSAGES_IN_FLIGHT = 4

def _length(iterables: Sequence[Iterable[Any]]) -> int | None:
    """How many calls zipping ``iterables`` makes, when they all know their length."""
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass
class _PendingSpawns:
    accepted: asyncio.Future[None]
    items: list[tuple[dict[str, Any], framing.Payload]] = dataclasses.field(default_factory=list)


def _flatten(batches: Iterator[list[Any]]) -> Iterator[Any]:
    try:
        for batch in batches:
            yield from batch
    finally:
        batches.close()  # type: ignore[attr-defined]  # stops the map when the caller stops early


class Function:
    """A function that runs on the runtime.

    >>> @app.function()
    ... def square(x): return x * x
    >>> square.remote(4)          # runs remotely, returns 16
    >>> await square.remote.aio(4)
    >>> square.local(4)           # runs here
    """

    def __init__(self, registration: Registration, local: Callable[..., Any], method: str | None = None) -> None:
        self.registration = registration
        self.app = registration.app
        self.raw_f = local
        self.method = method
        self.name = f"{registration.name}.{method}" if method else registration.name
        functools.update_wrapper(self, local)
        self.remote = Twin(self._remote, self._remote_aio)
        self.remote_gen = Twin(self._remote_gen, self._remote_gen_aio)
        self.map = Twin(self._map, self._map_aio)
        self.starmap = Twin(self._starmap, self._starmap_aio)
        self.for_each = Twin(self._for_each, self._for_each_aio)
        self.spawn = Twin(self._spawn, self._spawn_aio)
        self.spawn_map = twin(self._spawn_map_aio)
        # spawn.aio calls of one event-loop turn, sent together after it (one message, one commit)
        self._pending_spawns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PendingSpawns] = (
            weakref.WeakKeyDictionary())
        self.stats = twin(self._stats)
        self.batch_stats = twin(self._batch_stats)
        self.schedule = twin(self._schedule)

    @staticmethod
    def from_name(app_name: str, name: str) -> Function:
        """A handle on function ``name`` of the deployed app ``app_name``, from any process.

        >>> square = rc.Function.from_name("demo", "square")
        >>> square.remote(3), list(square.map(range(3))), square.spawn(4).get()
        (9, [0, 1, 4], 16)

        Raises ``NotFoundError`` when no such app or function is deployed. Calls after a
        redeploy go to the new definition.
        """
        lookup = Lookup(app_name, name)
        if lookup.methods:
            raise InvalidError(f"{name!r} in deployed app {app_name!r} is a class: use rc.Cls.from_name("
                               f"{app_name!r}, {name!r})")
        return Function(lookup, code_elsewhere(name))

    @property
    def options(self) -> dict[str, Any]:
        return self.registration.options

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function here, in this process."""
        return self.raw_f(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(
            f"{self.name} is a remote function: call {self.name}.remote(...) to run it on the runtime, "
            f"or {self.name}.local(...) to run it here"
        )

    def fid(self) -> tuple[_client.Connection, str]:
        return self.registration.fid()

    def forget_registrations(self) -> None:
        self.registration.forget()

    def registrations(self) -> list[Registration]:
        return [self.registration]

    async def fid_aio(self) -> tuple[_client.Connection, str]:
        cached = self.registration.cached()
        return cached if cached is not None else await asyncio.to_thread(self.fid)

    async def _stats(self) -> dict[str, Any]:
        """The function's pool now: containers by state (starting, idle, busy), queued and running inputs.

        >>> square.stats()            # or: await square.stats.aio()
        {'function': 'square', 'containers': {'idle': 2}, 'queued': 0, 'running': 0, ...}
        """
        return await self._pool_status(*await self.fid_aio()) or {"function": self.name, "containers": {}}

    async def _pool_status(self, conn: _client.Connection, fid: str) -> dict[str, Any] | None:
        """The pool of ``fid`` in the runtime's status; None when the runtime has none (its app stopped)."""
        pools = (await conn.arequest({"t": "status"}))["pools"]
        return next((p for p in pools if p["fid"] == fid), None)

    @property
    def batching(self) -> dict[str, int] | None:
        """The ``@rc.batched`` limits of this function (or method), or None."""
        batched: dict[str, dict[str, int]] = self.options.get("batched") or {}
        return batched.get(self.method or "")

    async def _batch_stats(self) -> BatchStats:
        """How the runtime batched this ``@rc.batched`` function's inputs so far.

        >>> stats = embed.batch_stats()       # or: await embed.batch_stats.aio()
        >>> dict(stats)
        {'batches': 63, 'items': 2000, 'sizes': {32: 62, 16: 1}, 'closed': {'full': 62, 'waited': 1},
         'wait_ms_mean': 4.1, 'wait_ms_p99': 9.8, 'items_per_s': 10230.5, 'recent': [...], ...}

        ``sizes`` is the histogram of batch sizes; ``closed`` says why batches closed (``full``:
        reached max_batch_size; ``waited``: the oldest input waited ``wait_ms``); waits are each
        input's time in the queue; ``recent`` lists the last batches with the runtime's timestamps.
        A ``BatchStats`` is that dict; its repr is a short report, and in a notebook it shows as a
        live view of the same numbers.
        """
        if self.batching is None:
            raise InvalidError(f"{self.name} is not @rc.batched: it has no batch stats (see .stats())")
        return self._batch_stats_of(await self._stats())

    def _batch_stats_of(self, pool: dict[str, Any]) -> BatchStats:
        batching = self.batching or {}
        found = (pool.get("batching") or {}).get(self.method or "")
        stats = dict(found or dict(batching, batches=0, items=0, sizes={}))  # no stats there: the declared limits
        stats["sizes"] = {int(size): n for size, n in stats.get("sizes", {}).items()}  # JSON keys are strings
        return BatchStats(stats, function=self.name, fetch=self._batch_stats_while_running)

    def _batch_stats_while_running(self) -> BatchStats:
        """``batch_stats()`` for a live view, which only looks: it never starts the app nor registers anything.

        A view left open after ``with app.run():`` ended would otherwise start the app again; and
        a pool gone from the runtime (its app stopped) raises, so the view keeps its last numbers.
        """
        cached = self.registration.cached()
        pool = None if cached is None else _bridge.run(self._pool_status(*cached))
        if pool is None:
            raise InvalidError(f"app {self.app.name!r} is not running here: no batches to follow")
        return self._batch_stats_of(pool)

    async def _schedule(self) -> Schedule:
        """The schedule of this function in its deployed app: next run, last run, pause, resume, run now.

        >>> s = nightly.schedule()        # or rc.Function.from_name("etl", "nightly").schedule()
        >>> s.next_at, s.last["state"]
        >>> s.pause(); s.resume(); call = s.run_now()

        NotFoundError when the function has no schedule or its app is not deployed.
        """
        from .schedules import fetch

        if self.method:
            raise InvalidError(f"{self.name} is a method: only functions have schedules")
        return await fetch(self.app.name, self.registration.name)

    # -- .remote ------------------------------------------------------------------------------

    def target(self) -> _invocation.Target:
        """What this function's calls go to now (registering it first when needed)."""
        conn, fid = self.registration.cached() or self.fid()
        return _invocation.Target(conn, fid, self.method, self.name)

    async def target_aio(self) -> _invocation.Target:
        conn, fid = await self.fid_aio()
        return _invocation.Target(conn, fid, self.method, self.name)

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function remotely and return its result (or raise its exception)."""
        self._check_generator(False)
        try:
            return _invocation.call(self.target(), args, kwargs)
        except KeyboardInterrupt:  # the pipeline cancelled it
            print(f"remotecell: interrupted; cancelled the remote call to {self.name}", file=sys.stderr)
            raise

    @functools.cached_property
    def _is_generator(self) -> bool:
        return self.registration.is_generator(self.method)

    def _check_generator(self, wanted: bool) -> None:
        is_generator = self._is_generator
        if is_generator and not wanted:
            raise InvalidError(f"{self.name} is a generator function: iterate over {self.name}.remote_gen(...) "
                               "to get its items as they are made")
        if wanted and not is_generator:
            raise InvalidError(f"{self.name} is not a generator function: call {self.name}.remote(...)")

    def _remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Run a generator function remotely; yield its items as the remote generator makes them.

        >>> @app.function()
        ... def count(n):
        ...     yield from range(n)
        >>> list(count.remote_gen(3))     # or: async for x in count.remote_gen.aio(3)
        [0, 1, 2]
        """
        self._check_generator(True)
        return self._items(args, kwargs)

    def _items(self, args: tuple, kwargs: dict) -> Iterator[Any]:
        conn, fid = self.fid()
        return _invocation.items(_invocation.Target(conn, fid, self.method, self.name), args, kwargs)

    def _remote_gen_aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._check_generator(True)
        return self._items_aio(args, kwargs)

    async def _items_aio(self, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        async for item in _invocation.items_aio(await self.target_aio(), args, kwargs):
            yield item

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        self._check_generator(False)
        return await _invocation.call_aio(await self.target_aio(), args, kwargs)

    # -- spawn --------------------------------------------------------------------------------

    def _spawn_payload(self, args: tuple, kwargs: dict) -> framing.Payload:
        return _invocation.spawn_payload(self.name, args, kwargs)

    def _spawn(self, *args: Any, **kwargs: Any) -> calls.FunctionCall:
        """Start the function remotely and return at once with a handle on the call.

        The runtime writes the input to its job store before this returns; the
        result is kept (7 days by default) for ``call.get()`` from any process.

        >>> call = square.spawn(4)
        >>> call.get()
        16
        """
        call_id, payload = calls.new_call_id(), self._spawn_payload(args, kwargs)
        _invocation.spawn(self._fresh_target, [{"id": call_id}], [payload])
        return calls.FunctionCall(call_id, self.name)

    def _fresh_target(self) -> _invocation.Target:
        conn, fid = self.fid()  # looked at again each time: after a restart, the app registers again
        return _invocation.Target(conn, fid, self.method, self.name)

    async def _spawn_aio(self, *args: Any, **kwargs: Any) -> calls.FunctionCall:
        call_id, payload = calls.new_call_id(), self._spawn_payload(args, kwargs)
        loop = asyncio.get_running_loop()
        pending = self._pending_spawns.get(loop)
        if pending is None:
            pending = self._pending_spawns[loop] = _PendingSpawns(loop.create_future())
            loop.call_soon(self._send_pending_spawns, loop, pending)
        pending.items.append(({"id": call_id}, payload))
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

    async def _spawn_many(self, items: list[tuple[dict[str, Any], framing.Payload]]) -> None:
        await _invocation.spawn_aio(self.target_aio, [entry for entry, _ in items], [payload for _, payload in items])

    async def _spawn_map_aio(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                             ) -> calls.FunctionCallGroup:
        """Spawn one call per item (as ``map``), and return one handle for all of them.

        >>> group = square.spawn_map(range(1000))
        >>> group.get(index=7), group.status()
        (49, {'succeeded': 1000})
        """
        group_id, count = calls.new_group_id(), 0
        chunk: list[tuple[dict[str, Any], framing.Payload]] = []
        sending: set[asyncio.Task[None]] = set()  # a few messages in flight: pickling overlaps the runtime's writes
        try:
            for args in zip(*iterables, strict=False):
                entry = {"id": f"{group_id}.{count}", "g": group_id, "i": count}
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

    # -- map and friends ----------------------------------------------------------------------

    async def _calls_aio(self, arg_tuples: Iterable[Sequence[Any]], kwargs: dict[str, Any] | None = None,
                         order_outputs: bool = True, return_exceptions: bool = False,
                         progress: bool | None = None, total: int | None = None) -> AsyncIterator[list[Any]]:
        """One remote call per tuple of arguments; lists of results as they finish (in input order by default)."""
        fanout = _invocation.fanout(await self.target_aio())
        meter = _progress.Progress(f"{self.name}.map", total, progress)
        async for values in _map.run(fanout, arg_tuples, kwargs or {}, order_outputs, return_exceptions, meter):
            yield values

    def _map_batches(self, *iterables: Iterable[Any], **options: Any) -> AsyncIterator[list[Any]]:
        return self._calls_aio(zip(*iterables, strict=False), total=_length(iterables), **options)  # shortest wins

    def _starmap_batches(self, items: Iterable[Sequence[Any]], **options: Any) -> AsyncIterator[list[Any]]:
        return self._calls_aio(items, total=_length([items]), **options)

    async def _map_aio(self, *iterables: Iterable[Any], **options: Any) -> AsyncIterator[Any]:
        async for values in self._map_batches(*iterables, **options):
            for value in values:
                yield value

    async def _starmap_aio(self, items: Iterable[Sequence[Any]], **options: Any) -> AsyncIterator[Any]:
        async for values in self._starmap_batches(items, **options):
            for value in values:
                yield value

    def _map(self, *iterables: Iterable[Any], **options: Any) -> Iterator[Any]:
        """``f.map(xs, ys)`` calls ``f(x, y)`` for each pair; results in input order.

        Options: ``kwargs={...}`` for every call, ``order_outputs=False``, ``return_exceptions=True``,
        ``progress=True/False`` (default: a progress line on a terminal, a widget in a notebook).

        >>> list(square.map(range(5)))
        [0, 1, 4, 9, 16]
        """
        return _flatten(_bridge.iterate(self._map_batches(*iterables, **options)))

    def _starmap(self, items: Iterable[Sequence[Any]], **options: Any) -> Iterator[Any]:
        """``f.starmap([(1, 2), (3, 4)])`` calls ``f(1, 2)`` and ``f(3, 4)``."""
        return _flatten(_bridge.iterate(self._starmap_batches(items, **options)))

    def _for_each(self, *iterables: Iterable[Any], ignore_exceptions: bool = False, **options: Any) -> None:
        """Call ``f`` on every item for its effects; results are dropped."""
        for _ in self._map(*iterables, return_exceptions=ignore_exceptions, order_outputs=False, **options):
            pass

    async def _for_each_aio(self, *iterables: Iterable[Any], ignore_exceptions: bool = False,
                            **options: Any) -> None:
        async for _ in self._map_aio(*iterables, return_exceptions=ignore_exceptions, order_outputs=False,
                                     **options):
            pass

    def __repr__(self) -> str:
        return f"<rc.Function {self.app.name}.{self.name}>"

