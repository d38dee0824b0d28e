"""What a function's pool on the runtime says of it: ``f.stats()`` and ``f.batch_stats()``.

Both read the runtime's ``status`` and pick the function's pool by fid. Invariant: the live
batch view's refresh only looks (it never starts an app nor registers a definition).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from remotecell_runtime.protocol.messages.session import StatusMsg, StatusReply

from . import _bridge, _client
from .batching import BatchStats
from .exceptions import InvalidError
from .registration import Registration


@dataclass(frozen=True)
class FunctionStats:
    """What ``f.get_current_stats()`` says (Modal's ``FunctionStats``): the function's queue and containers now."""

    backlog: int  # inputs waiting for a container
    num_total_runners: int  # containers, starting ones included
    num_running_inputs: int = 0
    input_headroom: int = 0  # inputs the live containers could take on now


class PoolStats:
    """The stats of one function (or method) ``name``, found through its registration."""

    def __init__(self, name: str, method: str | None, registration: Registration,
                 batching: Callable[[], dict[str, int] | None],
                 fid: Callable[[], Awaitable[tuple[_client.Connection, str]]]) -> None:
        self.name = name
        self.method = method
        self.registration = registration
        self.batching = batching  # the declared @rc.batched limits, or None
        self.fid = fid  # registers the definition first when needed

    async def stats(self) -> dict[str, Any]:
        """The function's pool now: containers by state (starting, idle, busy), queued and running inputs.

        >>> square.stats()            # or: await square.stats.aio()
        {'function': 'square', 'containers': {'idle': 2}, 'queued': 0, 'running': 0, ...}
        """
        return await pool_status(*await self.fid()) or {"function": self.name, "containers": {}}

    async def current_stats(self) -> FunctionStats:
        """Modal's ``get_current_stats()``: backlog and containers of this function now.

        >>> square.get_current_stats()
        FunctionStats(backlog=0, num_total_runners=1, num_running_inputs=0, input_headroom=1)
        """
        pool = await self.stats()
        containers = {k: v for k, v in pool.get("containers", {}).items() if k not in ("stopping", "dead")}
        return FunctionStats(backlog=int(pool.get("queued", 0)), num_total_runners=sum(containers.values()),
                             num_running_inputs=int(pool.get("running", 0)),
                             input_headroom=int(pool.get("headroom", 0)))

    async def batch_stats(self) -> BatchStats:
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
        if self.batching() is None:
            raise InvalidError(f"{self.name} is not @rc.batched: it has no batch stats (see .stats())")
        return self._batch_stats_of(await self.stats())

    def _batch_stats_of(self, pool: dict[str, Any]) -> BatchStats:
        batching = self.batching() or {}
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
        pool = None if cached is None else _bridge.run(pool_status(*cached))
        if pool is None:
            raise InvalidError(f"app {self.registration.app.name!r} is not running here: no batches to follow")
        return self._batch_stats_of(pool)


async def pool_status(conn: _client.Connection, fid: str) -> dict[str, Any] | None:
    """The pool of ``fid`` in the runtime's status; None when the runtime has none (its app stopped)."""
    status, _ = await conn.ask_aio(StatusMsg(), StatusReply)
    return next((p for p in status.pools if p["fid"] == fid), None)
