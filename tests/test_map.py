"""map / starmap / for_each against a real runtime."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import wait_for


def test_map_keeps_order_and_starmap_unpacks(app):
    @app.function(max_containers=3)
    def slow_square(x, delay=0.0):
        time.sleep(delay)
        return x * x

    assert list(slow_square.map(range(20))) == [x * x for x in range(20)]
    # later inputs finish first, yet results come in input order
    assert list(slow_square.map([3, 2, 1], [0.3, 0.15, 0.0])) == [9, 4, 1]
    assert list(slow_square.starmap([(1, 0.0), (2, 0.0)])) == [1, 4]
    assert list(slow_square.map(range(3), kwargs={"delay": 0.0})) == [0, 1, 4]


def test_unordered_map_yields_as_inputs_finish(app):
    @app.function(max_containers=3)
    def wait(seconds):
        time.sleep(seconds)
        return seconds

    assert list(wait.map([0.6, 0.3, 0.0], order_outputs=False)) == [0.0, 0.3, 0.6]


def test_return_exceptions_and_first_failure(app):
    @app.function(max_containers=2)
    def check(x):
        if x % 3 == 0:
            raise ValueError(f"bad {x}")
        return x

    results = list(check.map(range(1, 7), return_exceptions=True))
    assert results[:2] == [1, 2] and isinstance(results[2], ValueError) and str(results[5]) == "bad 6"
    with pytest.raises(ValueError, match="bad 3"):
        list(check.map(range(1, 7)))
    check.for_each(range(1, 7), ignore_exceptions=True)
    with pytest.raises(ValueError):
        check.for_each(range(1, 7))


def test_failing_input_iterator_surfaces_and_cancels(app):
    @app.function(max_containers=2)
    def nap(x):
        time.sleep(5)
        return x

    def inputs():
        yield 1
        yield 2
        raise RuntimeError("input iterator broke")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="input iterator broke"):
        list(nap.map(inputs()))
    assert time.monotonic() - start < 4  # surfaced at once, not after the sleeping inputs

    def nothing_left() -> bool:
        stats = nap.stats()
        return stats["queued"] == 0 and stats["running"] == 0

    wait_for(nothing_left, timeout_s=10, what="the inputs already sent to be cancelled")


def test_map_aio_in_a_running_loop(app):
    @app.function()
    def inc(x):
        return x + 1

    async def main():
        return [x async for x in inc.map.aio(range(10))], await inc.for_each.aio(range(3))

    values, nothing = asyncio.run(main())
    assert values == list(range(1, 11)) and nothing is None
