"""Batch formation for ``@rc.batched`` functions: pure asyncio, no processes, no sockets.

A ``Batcher`` holds the single inputs of one function (or one method of a class)
that wait for a batch.  A batch is *due* when it holds ``max_batch_size`` inputs
(closed "full") or when its oldest input has waited ``wait_ms`` since it arrived
(closed "waited").  The batcher arms one timer, for the oldest input's deadline,
and calls ``on_due`` when it fires; the pool then ``take``s due batches for its
free containers.  A due batch that finds no free container keeps taking inputs
(up to ``max_batch_size``) until one frees up: a busy pool makes bigger batches.

    >>> b = Batcher(max_batch_size=32, wait_ms=10, on_due=pool.dispatch)
    >>> b.add(inp)                      # inp.queued_at: when it arrived (time.monotonic())
    >>> while b.due() and (c := free()): run(b.take(), c)

The stats (``BatcherStats``) are kept here too: sizes, why batches closed, each
input's wait, items per second, and the last batches with their timestamps.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

RECENT_BATCHES = 50  # kept with their timestamps (batch_stats()["recent"])
WAIT_SAMPLES = 10_000  # per-input queue waits kept for the mean and p99
RATE_WINDOW_S = 60.0  # items_per_s counts batches closed this recently

_batch_ids = itertools.count(1)


class Queued(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def queued_at(self) -> float: ...  # time.monotonic() when the input arrived


T = TypeVar("T", bound=Queued)


@dataclass
class Batch(Generic[T]):
    """Inputs that run together: one call of the function with one list per parameter."""

    method: str
    items: list[T]
    reason: str  # "full" or "waited"
    opened_at: float  # when its oldest input arrived
    closed_at: float  # when it was taken for a container
    id: str = field(default_factory=lambda: f"b{next(_batch_ids)}")
    outstanding: set[str] = field(default_factory=set)  # input ids the container still owes a result
    container: Any = None
    timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.outstanding = {item.id for item in self.items}


class BatcherStats:
    """What ``f.batch_stats()`` reports for one batched function."""

    def __init__(self, max_batch_size: int, wait_ms: int) -> None:
        self.max_batch_size = max_batch_size
        self.wait_ms = wait_ms
        self.batches = 0
        self.items = 0
        self.sizes: collections.Counter[int] = collections.Counter()
        self.closed: collections.Counter[str] = collections.Counter()
        self.waits_s: collections.deque[float] = collections.deque(maxlen=WAIT_SAMPLES)
        self.recent: collections.deque[Batch[Any]] = collections.deque(maxlen=RECENT_BATCHES)
        self.closes: collections.deque[tuple[float, int]] = collections.deque(maxlen=1000)  # (closed_at, size)

    def record(self, batch: Batch[Any]) -> None:
        size = len(batch.items)
        self.batches += 1
        self.items += size
        self.sizes[size] += 1
        self.closed[batch.reason] += 1
        self.waits_s.extend(batch.closed_at - item.queued_at for item in batch.items)
        self.recent.append(batch)
        self.closes.append((batch.closed_at, size))

    def items_per_s(self, now: float) -> float | None:
        """Items per second between the first and the last batch closed in the last ``RATE_WINDOW_S``."""
        window = [(t, n) for t, n in self.closes if now - t <= RATE_WINDOW_S]
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return None
        return sum(n for _, n in window[1:]) / (window[-1][0] - window[0][0])

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        waits_ms = sorted(w * 1e3 for w in self.waits_s)
        return {
            "max_batch_size": self.max_batch_size,
            "wait_ms": self.wait_ms,
            "batches": self.batches,
            "items": self.items,
            "mean_batch_size": self.items / self.batches if self.batches else None,
            "sizes": {str(size): n for size, n in sorted(self.sizes.items())},
            "closed": {"full": self.closed["full"], "waited": self.closed["waited"]},
            "wait_ms_mean": sum(waits_ms) / len(waits_ms) if waits_ms else None,
            "wait_ms_p99": waits_ms[min(len(waits_ms) - 1, int(len(waits_ms) * 0.99))] if waits_ms else None,
            "items_per_s": self.items_per_s(now),
            # The runtime's own clock: ``waited_ms`` is from the oldest input's arrival to the close.
            "recent": [
                {"size": len(b.items), "reason": b.reason, "waited_ms": (b.closed_at - b.opened_at) * 1e3,
                 "closed_s_ago": now - b.closed_at}
                for b in self.recent
            ],
        }


class Batcher(Generic[T]):
    """The inputs of one batched function waiting for their batch, and when it is due."""

    def __init__(self, method: str, max_batch_size: int, wait_ms: int, on_due: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.method = method
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1e3
        self.on_due = on_due
        self.clock = clock
        self.pending: collections.deque[T] = collections.deque()
        self.stats = BatcherStats(max_batch_size, wait_ms)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for: T | None = None  # the oldest input the timer was armed for

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def batches_waiting(self) -> int:
        """How many batches the pending inputs make (what the autoscaler plans containers for)."""
        return -(-len(self.pending) // self.max_batch_size)

    def add(self, item: T, front: bool = False) -> None:
        """Queue one input; ``front``: a retried input goes before the others."""
        if front:
            self.pending.appendleft(item)
        else:
            self.pending.append(item)
        self._arm()

    def remove(self, item: T) -> bool:
        """Take a cancelled input out of its pending batch; False if it was not waiting here."""
        try:
            self.pending.remove(item)
        except ValueError:
            return False
        self._arm()
        return True

    def due(self, now: float | None = None) -> bool:
        if len(self.pending) >= self.max_batch_size:
            return True
        if not self.pending:
            return False
        now = self.clock() if now is None else now
        return now - self.pending[0].queued_at >= self.wait_s

    def take(self, now: float | None = None, limit: int | None = None) -> Batch[T] | None:
        """The next due batch (oldest inputs first, at most ``max_batch_size``, or ``limit``), or None."""
        now = self.clock() if now is None else now
        if not self.due(now):
            return None
        n = min(len(self.pending), self.max_batch_size, limit or self.max_batch_size)
        items = [self.pending.popleft() for _ in range(n)]
        reason = "full" if n == self.max_batch_size else "waited"
        batch = Batch(self.method, items, reason, opened_at=items[0].queued_at, closed_at=now)
        self.stats.record(batch)
        self._arm()
        return batch

    def drain(self) -> list[T]:
        """Every pending input, taken out (the pool is stopping, or its function failed to load)."""
        items, self.pending = list(self.pending), collections.deque()
        self._arm()
        return items

    def _arm(self) -> None:
        """One timer, for the oldest pending input's deadline; re-armed only when that input changes."""
        head = self.pending[0] if self.pending else None
        if head is self._timer_for:
            return  # the hot path: the oldest input did not change (its timer runs, or has fired)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_for = head
        if head is not None:
            delay_s = max(0.0, head.queued_at + self.wait_s - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.pending and not self.due():  # fired a hair early: wait out the rest
            self._timer_for = None
            self._arm()
            return
        self.on_due()
