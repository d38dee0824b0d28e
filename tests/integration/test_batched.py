"""@rc.batched against a real runtime: batches across callers, contract errors, cancels, containers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import pytest
import remotecell as rc
from conftest import wait_for
from remotecell.exceptions import BatchContractError, InvalidError

LONG_WAIT_MS = 60_000  # batches in these tests close because they are full, never by waiting this long


def _batch_seen(xs):
    """Each input learns which batch it ran in: its own item, and every item of the batch."""
    return [(x, sorted(xs)) for x in xs]


def _seen_function(app, max_batch_size, wait_ms=LONG_WAIT_MS):
    """A batched function on one container that tells each input which batch it ran in."""
    @app.function(max_containers=1)
    @rc.batched(max_batch_size=max_batch_size, wait_ms=wait_ms)
    def seen(xs):
        return _batch_seen(xs)

    return seen


def test_full_batches_close_at_max_batch_size(app):
    seen = _seen_function(app, 4)

    async def main():
        return await asyncio.gather(*(seen.remote.aio(i) for i in range(8)))

    results = asyncio.run(main())
    assert [x for x, _ in results] == list(range(8))
    assert all(len(batch) == 4 and x in batch for x, batch in results)
    stats = seen.batch_stats()
    assert stats["batches"] == 2 and stats["sizes"] == {4: 2} and stats["closed"] == {"full": 2, "waited": 0}
    assert all(b["reason"] == "full" and b["waited_ms"] < LONG_WAIT_MS for b in stats["recent"])


def test_a_lone_input_closes_its_batch_after_wait_ms(app):
    wait_ms = 150

    seen = _seen_function(app, 100, wait_ms)

    assert seen.remote(1) == (1, [1])  # starts the container
    assert seen.remote(2) == (2, [2])  # a warm container: the close is the wait alone
    last = seen.batch_stats()["recent"][-1]
    assert last["reason"] == "waited" and last["size"] == 1
    # The runtime's own clock: from the input's arrival to the batch's close.
    assert wait_ms <= last["waited_ms"] < wait_ms + 100, last


def test_one_batch_from_many_threads_and_tasks_of_one_client(app):
    seen = _seen_function(app, 16)

    async def tasks():
        return await asyncio.gather(*(seen.remote.aio(100 + i) for i in range(8)))

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        from_tasks = pool.submit(asyncio.run, tasks())
        from_threads = list(pool.map(seen.remote, range(8)))
        results = from_threads + from_tasks.result(timeout=60)
    everyone = sorted([*range(8), *range(100, 108)])
    assert all(batch == everyone for _, batch in results)  # one batch of all 16 callers
    assert sorted(x for x, _ in results) == everyone


def test_map_inputs_are_batched_and_async_functions_work(app):
    @app.function(max_containers=1)
    @rc.batched(max_batch_size=10, wait_ms=LONG_WAIT_MS)
    async def seen(xs, ys):
        await asyncio.sleep(0)
        return [(x + y, len(xs)) for x, y in zip(xs, ys, strict=True)]

    assert list(seen.map(range(20), range(20))) == [(2 * i, 10) for i in range(20)]
    assert list(seen.starmap([(1, 2)] * 10)) == [(3, 10)] * 10
    assert seen.batch_stats()["sizes"] == {10: 3}


def test_wrong_returns_fail_the_batch_with_batch_contract_error_and_the_container_goes_on(app):
    @app.function(max_containers=1)
    @rc.batched(max_batch_size=3, wait_ms=LONG_WAIT_MS)
    def shape(xs):
        kind = xs[0][0]
        if kind == "short":
            return xs[:-1]
        if kind == "tuple":
            return tuple(xs)
        return [(x, os.environ["REMOTECELL_TASK_ID"]) for x in xs]

    async def batch(kind):
        return await asyncio.gather(*(shape.remote.aio((kind, i)) for i in range(3)), return_exceptions=True)

    short = asyncio.run(batch("short"))
    assert all(isinstance(e, BatchContractError) for e in short), short
    assert "returned a list of 2 results for a batch of 3 inputs" in str(short[0])
    wrong_type = asyncio.run(batch("tuple"))
    assert all(isinstance(e, BatchContractError) for e in wrong_type), wrong_type
    assert "returned tuple of length 3 instead of a list of 3 results" in str(wrong_type[0])
    good = asyncio.run(batch("good"))
    assert [x for x, _ in good] == [("good", i) for i in range(3)]
    assert len({pid for _, pid in good}) == 1
    assert shape.stats()["containers"] == {"idle": 1}  # the same container, still usable


def test_an_exception_fails_every_input_of_its_batch_with_the_traceback(app):
    @app.function(max_containers=1)
    @rc.batched(max_batch_size=3, wait_ms=LONG_WAIT_MS)
    def divide(xs):
        if 0 in xs:
            return [1 / x for x in xs]  # ZeroDivisionError for the whole batch
        return [os.environ["REMOTECELL_TASK_ID"]] * len(xs)

    async def batch(values):
        return await asyncio.gather(*(divide.remote.aio(v) for v in values), return_exceptions=True)

    failed = asyncio.run(batch([1, 0, 2]))
    assert all(isinstance(e, ZeroDivisionError) for e in failed), failed
    assert all("return [1 / x for x in xs]" in "".join(getattr(e, "__notes__", [])) for e in failed)
    pids = asyncio.run(batch([1, 2, 3]))
    assert len(set(pids)) == 1 and divide.stats()["containers"] == {"idle": 1}


def test_an_input_that_does_not_fit_the_signature_fails_alone(app):
    seen = _seen_function(app, 3)

    async def main():
        calls = [seen.remote.aio(1), seen.remote.aio(1, 2), seen.remote.aio(xs=3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    one, too_many, by_name = asyncio.run(main())
    assert isinstance(too_many, TypeError)
    assert one == (1, [1, 3]) and by_name == (3, [1, 3])


def test_a_caller_cancelling_while_queued_leaves_the_pending_batch(app):
    seen = _seen_function(app, 3)

    async def main():
        stay = asyncio.ensure_future(seen.remote.aio("stay"))
        leave = asyncio.ensure_future(seen.remote.aio("leave"))
        await asyncio.to_thread(wait_for, lambda: seen.stats()["queued"] == 2, what="2 queued inputs")
        leave.cancel()
        await asyncio.to_thread(wait_for, lambda: seen.stats()["queued"] == 1, what="the cancel to land")
        later = await asyncio.gather(seen.remote.aio("a"), seen.remote.aio("b"))
        return await stay, later, leave

    stayed, later, leave = asyncio.run(main())
    assert leave.cancelled()
    assert stayed == ("stay", ["a", "b", "stay"])
    assert later == [("a", ["a", "b", "stay"]), ("b", ["a", "b", "stay"])]
    assert seen.batch_stats()["sizes"] == {3: 1}


def test_two_containers_each_run_a_batch_while_more_inputs_queue(app):
    @app.function(max_containers=2)
    @rc.batched(max_batch_size=4, wait_ms=50)
    def slow(xs):
        start = time.time()
        time.sleep(1.0)
        return [(os.environ["REMOTECELL_TASK_ID"], start, time.time(), len(xs))] * len(xs)

    async def main():
        return await asyncio.gather(*(slow.remote.aio(i) for i in range(12)))

    results = asyncio.run(main())
    spans = {(pid, start, end) for pid, start, end, _ in results}
    assert len({pid for pid, _, _ in spans}) == 2  # both containers ran batches
    by_pid = {pid: sorted((s, e) for p, s, e in spans if p == pid) for pid, _, _ in spans}
    first_a, first_b = (runs[0] for runs in by_pid.values())
    assert max(first_a[0], first_b[0]) < min(first_a[1], first_b[1])  # at the same time
    assert sum(n for *_, n in results) / len(results) > 1  # and they were batches


def test_concurrent_batched_class_holds_several_batches_in_one_container(app):
    @app.cls(max_containers=1)
    @rc.concurrent(max_inputs=2)
    class Model:
        @rc.enter()
        def load(self):
            self.offset = 1000

        @rc.method()
        @rc.batched(max_batch_size=2, wait_ms=LONG_WAIT_MS)
        def predict(self, xs):
            start = time.time()
            time.sleep(0.5)
            end = time.time()
            return [(x + self.offset, os.environ["REMOTECELL_TASK_ID"], start, end) for x in xs]

        @rc.method()
        def plain(self, x):
            return x + self.offset

    async def main():
        return await asyncio.gather(*(Model().predict.remote.aio(i) for i in range(4)))

    results = asyncio.run(main())
    assert [r[0] for r in results] == [1000, 1001, 1002, 1003]
    assert len({r[1] for r in results}) == 1
    spans = sorted({(r[2], r[3]) for r in results})
    assert len(spans) == 2 and spans[1][0] < spans[0][1]  # two batches overlapped in one container
    assert Model().plain.remote(5) == 1005  # an unbatched method of the same class
    with pytest.raises(rc.exceptions.InvalidError, match="not @rc.batched"):
        Model().plain.batch_stats()


def test_retries_are_per_input_and_the_timeout_per_batch_attempt(app, tmp_path):
    marker = tmp_path / "failed-once"

    @app.function(max_containers=1, retries=rc.Retries(max_retries=1, initial_delay=0.0))
    @rc.batched(max_batch_size=2, wait_ms=LONG_WAIT_MS)
    def flaky(xs):
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("first attempt fails")
        return list(xs)

    async def main():
        return await asyncio.gather(flaky.remote.aio(1), flaky.remote.aio(2))

    assert asyncio.run(main()) == [1, 2]
    assert flaky.batch_stats()["batches"] == 2  # the failed batch, then its inputs again

    @app.function(max_containers=1, timeout=1)
    @rc.batched(max_batch_size=2, wait_ms=LONG_WAIT_MS)
    def stuck(xs):
        time.sleep(30)
        return xs

    async def stuck_batch():
        return await asyncio.gather(stuck.remote.aio(1), stuck.remote.aio(2), return_exceptions=True)

    errors = asyncio.run(stuck_batch())
    assert all(isinstance(e, rc.exceptions.FunctionTimeoutError) for e in errors), errors
    assert "a batch of 2 inputs" in str(errors[0])


def test_spawned_inputs_share_batches_with_remote_calls(app):
    seen = _seen_function(app, 4)

    spawned = [seen.spawn("s1"), seen.spawn("s2")]  # written to the job store, waiting for their batch

    async def main():
        return await asyncio.gather(seen.remote.aio("r1"), seen.remote.aio("r2"))

    together = ["r1", "r2", "s1", "s2"]
    assert asyncio.run(main()) == [("r1", together), ("r2", together)]
    assert [call.get(timeout=30) for call in spawned] == [("s1", together), ("s2", together)]


def test_batched_goes_below_the_app_decorators(runtime):
    app = rc.App("order")
    f = app.function()(lambda xs: xs)
    with pytest.raises(InvalidError, match="goes below @app.function"):
        rc.batched(max_batch_size=4, wait_ms=1)(f)

    class Model:
        @rc.batched(max_batch_size=4, wait_ms=1)
        def predict(self, xs):
            return xs

        @rc.method()
        def other(self, x):
            return x

    assert app.cls()(Model).roles["method"] == ["predict", "other"]  # as Modal's: @batched makes a method

    class Hooked:
        @rc.enter()
        @rc.batched(max_batch_size=4, wait_ms=1)
        def load(self, xs):
            return xs

        @rc.method()
        def other(self, x):
            return x

    with pytest.raises(InvalidError, match=r"Hooked.load is @rc.batched and @rc.enter\(\): a batched method is"):
        app.cls()(Hooked)
