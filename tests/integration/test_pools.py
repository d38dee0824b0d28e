"""Pools against a real runtime: input concurrency, classes with lifecycle hooks, autoscaling."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from pathlib import Path

import pytest
import remotecell as rc
from conftest import wait_for
from remotecell import exceptions


def _overlapping(spans: list[tuple[float, float]]) -> bool:
    return max(start for start, _ in spans) < min(end for _, end in spans)


def test_sync_inputs_run_concurrently_on_threads(app):
    @app.function(max_containers=1)
    @rc.concurrent(max_inputs=4)
    def nap(seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time(), os.environ["REMOTECELL_TASK_ID"], threading.current_thread().name

    async def main():
        return await asyncio.gather(*(nap.remote.aio(0.5) for _ in range(4)))

    results = asyncio.run(main())
    assert len({pid for *_, pid, _ in results}) == 1
    assert len({name for *_, name in results}) == 4
    assert _overlapping([(s, e) for s, e, _, _ in results])


def test_async_inputs_run_concurrently_on_the_event_loop(app):
    @app.function(max_containers=1)
    @rc.concurrent(max_inputs=8)
    async def fetch(i):
        start = time.time()
        await asyncio.sleep(0.5)
        print(f"fetched {i}")
        return start, time.time(), os.environ["REMOTECELL_TASK_ID"]

    async def main():
        return await asyncio.gather(*(fetch.remote.aio(i) for i in range(8)))

    results = asyncio.run(main())
    assert len({pid for *_, pid in results}) == 1
    assert _overlapping([(s, e) for s, e, _ in results])


def test_output_of_concurrent_inputs_goes_to_each_caller(app, capfd):
    @app.function(max_containers=1)
    @rc.concurrent(max_inputs=4)
    def talk(i):
        for n in range(3):
            print(f"input {i} line {n}")
            time.sleep(0.05)
        return i

    async def main():
        return await asyncio.gather(*(talk.remote.aio(i) for i in range(4)))

    assert asyncio.run(main()) == [0, 1, 2, 3]
    out = capfd.readouterr().out
    for i in range(4):
        assert [line for line in out.splitlines() if line.startswith(f"input {i} ")] == [
            f"input {i} line {n}" for n in range(3)
        ]


def test_class_enter_once_per_container_and_parameters_make_pools(app, tmp_path):
    log = tmp_path / "enters"

    @app.cls(max_containers=1)
    class Model:
        def __init__(self, scale=1):
            self.scale = scale

        @rc.enter()
        def load(self):
            with open(log, "a") as f:
                f.write(f"{os.environ.get('REMOTECELL_TASK_ID')}\n")
            self.weights = [self.scale] * 3

        @rc.method()
        def predict(self, x):
            return [w * x for w in self.weights], os.environ.get("REMOTECELL_TASK_ID")

        @rc.method()
        async def predict_async(self, x):
            return sum(self.weights) * x

    small = Model(scale=1)
    assert small.predict.remote(2)[0] == [2, 2, 2]
    small_id = small.predict.remote(3)[1]
    assert asyncio.run(small.predict_async.remote.aio(1)) == 3
    big = Model(scale=10)
    values, big_id = big.predict.remote(1)
    assert values == [10, 10, 10] and big_id != small_id
    assert log.read_text().split() == [small_id, big_id]  # one @enter per container
    assert small.predict.local(1) == ([1, 1, 1], None)  # here, in no container


def test_exit_hook_runs_at_scale_down(app, tmp_path):
    marker = tmp_path / "exited"

    @app.cls(scaledown_window=2)
    class Worker:
        @rc.method()
        def work(self):
            return os.environ["REMOTECELL_TASK_ID"]

        @rc.exit()
        def close(self):
            Path(marker).write_text("bye")

    Worker().work.remote()
    wait_for(marker.exists, timeout_s=20, what="@exit at scale-down")


def test_scale_up_to_max_and_back_down_to_min(app, tmp_path):
    gate = tmp_path / "gate"

    @app.function(min_containers=1, max_containers=3, scaledown_window=2)
    def busy(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return os.environ["REMOTECELL_TASK_ID"]

    wait_for(lambda: busy.stats()["containers"].get("idle") == 1, what="min_containers=1 warm")

    async def main():
        return await asyncio.gather(*(busy.remote.aio(str(gate)) for _ in range(6)))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        calls = pool.submit(asyncio.run, main())
        wait_for(lambda: busy.stats()["running"] == 3, timeout_s=30, what="three containers busy")
        stats = busy.stats()
        assert stats["containers"] == {"busy": 3} and stats["queued"] == 3  # never more than max_containers
        gate.touch()
        pids = calls.result(timeout=30)
    assert len(set(pids)) == 3
    wait_for(lambda: busy.stats()["containers"] == {"idle": 1}, timeout_s=20, what="scale-down to min_containers")


def test_queued_inputs_all_complete(app):
    @app.function(max_containers=2)
    def ident(i):
        time.sleep(0.01)
        return i

    async def main():
        return await asyncio.gather(*(ident.remote.aio(i) for i in range(60)))

    assert asyncio.run(main()) == list(range(60))


def test_concurrency_is_validated_where_declared():
    with pytest.raises(exceptions.InvalidError, match=r"max_inputs=0 is out of range: allowed 1 to 1000"):
        rc.concurrent(max_inputs=0)
    with pytest.raises(exceptions.InvalidError, match=r"target_inputs=5 is out of range: allowed 1 to 2"):
        rc.concurrent(max_inputs=2, target_inputs=5)
    app = rc.App("v")
    with pytest.raises(exceptions.InvalidError, match="has no @rc.method"):
        @app.cls()
        class Empty:
            pass
