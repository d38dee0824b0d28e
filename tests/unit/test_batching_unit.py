"""Batch formation (runtime/batching.py) without processes: a fake clock and asyncio's own timers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
import remotecell as rc
from remotecell.exceptions import InvalidError
from remotecell_runtime.batching import Batcher


@dataclass
class Item:
    id: str
    queued_at: float = field(default_factory=time.monotonic)


def test_a_full_batch_is_due_at_once_and_takes_the_oldest_first():
    async def main():
        b = Batcher("", max_batch_size=3, wait_ms=60_000, on_due=lambda: None)
        items = [Item(str(i)) for i in range(4)]
        for item in items[:2]:
            b.add(item)
        assert not b.due() and b.take() is None
        for item in items[2:]:
            b.add(item)
        batch = b.take()
        assert batch is not None and batch.reason == "full" and [i.id for i in batch.items] == ["0", "1", "2"]
        assert len(b) == 1 and not b.due()
        return b.stats.describe()

    stats = asyncio.run(main())
    assert stats["batches"] == 1 and stats["sizes"] == {"3": 1} and stats["closed"] == {"full": 1, "waited": 0}


def test_the_oldest_input_waiting_wait_ms_makes_the_batch_due():
    async def main():
        fired = asyncio.Event()
        b = Batcher("", max_batch_size=10, wait_ms=30, on_due=fired.set)
        first = Item("a")
        b.add(first)
        b.add(Item("b"))
        await asyncio.wait_for(fired.wait(), 5)
        batch = b.take()
        assert batch is not None
        return batch, first

    batch, first = asyncio.run(main())
    assert batch.reason == "waited" and len(batch.items) == 2
    assert batch.closed_at - first.queued_at >= 0.030  # never before the oldest input waited wait_ms


def test_removing_the_oldest_rearms_the_timer_for_the_next():
    async def main():
        fired = asyncio.Event()
        calls = []
        b = Batcher("", max_batch_size=10, wait_ms=20, on_due=lambda: (calls.append(time.monotonic()), fired.set()))
        old = Item("old", queued_at=time.monotonic() - 0.015)  # 5 ms left
        new = Item("new")
        b.add(old)
        b.add(new)
        assert b.remove(old) and not b.remove(old)
        await asyncio.wait_for(fired.wait(), 5)
        return calls, new

    calls, new = asyncio.run(main())
    assert calls[0] - new.queued_at >= 0.020  # the timer of the removed input did not fire


def test_retried_inputs_go_first_and_drain_empties():
    async def main():
        b = Batcher("", max_batch_size=2, wait_ms=0, on_due=lambda: None)
        b.add(Item("x"))
        b.add(Item("retry"), front=True)
        assert [i.id for i in b.pending] == ["retry", "x"]
        assert b.batches_waiting == 1
        return [i.id for i in b.drain()], len(b)

    assert asyncio.run(main()) == (["retry", "x"], 0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_batch_size": 0, "wait_ms": 10}, "max_batch_size=0 is out of range: allowed 1 to 1000"),
    ({"max_batch_size": 1001, "wait_ms": 10}, "max_batch_size=1001 is out of range: allowed 1 to 1000"),
    ({"max_batch_size": 8, "wait_ms": -1}, "wait_ms=-1 is out of range: allowed 0 to 600000"),
    ({"max_batch_size": 8, "wait_ms": 600_001}, "wait_ms=600001 is out of range: allowed 0 to 600000"),
    ({"max_batch_size": 8, "wait_ms": 1.5}, "wait_ms=1.5 must be an integer from 0 to 600000"),
    ({"wait_ms": 10}, "max_batch_size=None must be an integer from 1 to 1000"),
])
def test_limits_are_checked_where_declared(kwargs, fragment):
    with pytest.raises(InvalidError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        rc.batched(**kwargs)


def test_signatures_that_cannot_take_lists_are_refused():
    deco = rc.batched(max_batch_size=4, wait_ms=1)
    with pytest.raises(InvalidError, match="parameter scale=2 has a default"):
        deco(lambda xs, scale=2: xs)
    with pytest.raises(InvalidError, match=r"\*rest is not allowed"):
        deco(lambda *rest: rest)
    with pytest.raises(InvalidError, match="cannot go on the generator"):
        def gen(xs):
            yield from xs
        deco(gen)
    with pytest.raises(InvalidError, match="not bare @rc.batched"):
        rc.batched(lambda xs: xs)
