"""Retries against a real runtime: backoff, budgets, lost containers, poison inputs, shared memory."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import remotecell as rc
from conftest import host_pid, wait_for
from remotecell import exceptions


def _attempts(log: Path) -> list[float]:
    return [float(line) for line in log.read_text().split()] if log.exists() else []


def _record(log_path: str) -> int:
    """Append this attempt's wall-clock time; return how many attempts there were before it."""
    with open(log_path, "a") as f:
        f.write(f"{time.time()}\n")
    with open(log_path) as f:
        return len(f.read().split()) - 1


def test_retries_with_exponential_backoff(app, tmp_path):
    log = tmp_path / "attempts"

    @app.function(retries=rc.Retries(max_retries=3, initial_delay=0.2, backoff_coefficient=2.0))
    def flaky(path):
        if _record(path) < 2:
            raise RuntimeError("not yet")
        return "third time lucky"

    assert flaky.remote(str(log)) == "third time lucky"
    times = _attempts(log)
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    assert gaps[1] < 5, gaps


def test_retry_budget_spent_raises_the_last_error(app, tmp_path):
    log = tmp_path / "attempts"

    @app.function(retries=rc.Retries(max_retries=1, initial_delay=0.0))
    def always_fails(path):
        n = _record(path)
        raise ValueError(f"attempt {n + 1} failed")

    with pytest.raises(ValueError, match="attempt 2 failed"):
        always_fails.remote(str(log))
    assert len(_attempts(log)) == 2


def test_timeout_consumes_the_budget_and_is_retried(app, tmp_path):
    log = tmp_path / "attempts"

    @app.function(timeout=1, retries=rc.Retries(max_retries=1, initial_delay=0.0))
    def slow_once(path):
        if _record(path) == 0:
            time.sleep(30)
        return "second attempt in time"

    assert slow_once.remote(str(log)) == "second attempt in time"
    assert len(_attempts(log)) == 2


def test_lost_container_is_retried_without_consuming_the_budget(app, tmp_path):
    log = tmp_path / "attempts"

    @app.function(retries=0)
    def killed_once(path):
        if _record(path) == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    pid = killed_once.remote(str(log))
    assert len(_attempts(log)) == 2 and pid != os.getpid()


def test_poison_input_fails_after_the_cap_and_others_go_on(app, tmp_path):
    log = tmp_path / "attempts"

    @app.function(retries=5)
    def poison(path, die):
        _record(path)
        if die:
            os.kill(os.getpid(), signal.SIGKILL)
        return "fine"

    with pytest.raises(exceptions.ContainerCrashed, match="failed as poison: 4 containers died"):
        poison.remote(str(log), True)
    assert len(_attempts(log)) == 4  # the first try and 3 retries, none from the user's budget
    assert poison.remote(str(tmp_path / "other"), False) == "fine"


def test_retried_input_finds_its_shared_memory_intact(app, tmp_path):
    log = tmp_path / "attempts"

    @app.function(retries=rc.Retries(max_retries=2, initial_delay=0.0))
    def checksum(path, a):
        total = float(a.sum(dtype=np.float64))
        a[:] = -1  # scribble over our view; a retry must still see the caller's data
        if _record(path) == 0:
            raise RuntimeError("first attempt fails after reading")
        return total

    a = np.arange(4_000_000, dtype=np.float32)
    assert checksum.remote(str(log), a) == float(a.sum(dtype=np.float64))


def test_timeout_escalates_to_sigkill_for_code_that_ignores_signals(app):

    @app.function(timeout=1)
    def stubborn():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.1)

    start = time.monotonic()
    with pytest.raises(exceptions.FunctionTimeoutError) as timed_out:
        stubborn.remote()
    assert time.monotonic() - start < 5  # the caller hears at the timeout, not after the escalation
    cid = re.search(r"container (\S+) was stopped", str(timed_out.value)).group(1)
    pid = host_pid(stubborn.stats(), cid)  # still there: SIGKILL comes seconds after the timeout

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout_s=15, what="SIGKILL of a container that ignores SIGINT and SIGTERM")


def test_memory_limit_stops_the_container_and_says_so(app):
    @app.function(memory=256)
    def hog():
        block = np.ones(512 * 1024 * 1024 // 8)  # 512 MiB, touched
        time.sleep(30)
        return block.size

    @app.function()
    def fine():
        return "unharmed"

    expected = r"out of memory: the kernel killed it at its limit of memory=256 MiB(.|\n)*failed as poison"
    with pytest.raises(exceptions.ContainerCrashed, match=expected):
        hog.remote()
    assert fine.remote() == "unharmed"  # the runtime and the other functions go on
    assert rc.status()["limits"].startswith("memory and cpu limits enforced")


def test_a_container_that_can_never_start_fails_the_call_instead_of_restarting_forever(app):
    @app.function(env={"PYTHONHOME": "/nonexistent"})  # its interpreter dies before it runs a line
    def never():
        return 1

    @app.function()
    def fine():
        return "unharmed"

    begin = time.monotonic()
    with pytest.raises(exceptions.ContainerCrashed, match=r"cannot start: 3 in a row died(.|\n)*exited with code"):
        never.remote()
    assert time.monotonic() - begin < 30
    begin = time.monotonic()
    with pytest.raises(exceptions.ContainerCrashed, match="cannot start"):
        never.remote()  # refused at once while the pool holds off
    assert time.monotonic() - begin < 5
    assert fine.remote() == "unharmed"


POISON = 57  # the one input of POISONED_MAP that kills its container
POISONED_MAP = 300


def _only_the_poison_fails(results: list) -> None:
    failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    assert list(failed) == [POISON], {i: repr(r)[:120] for i, r in list(failed.items())[:5]}
    assert isinstance(failed[POISON], exceptions.ContainerCrashed)
    assert "failed as poison: 4 containers died under it" in str(failed[POISON])
    assert [r for i, r in enumerate(results) if i != POISON] == [x * 2 for x in range(POISONED_MAP) if x != POISON]


def test_a_poison_input_fails_alone_its_neighbours_on_the_same_container_succeed(app):
    @app.function(max_containers=1)
    def double(x):
        if x == POISON:
            os._exit(3)  # dies under this input, whatever else its container holds
        return x * 2

    assert double.remote(1) == 2  # warm: the function is known to be fast, so its container gets a backlog
    _only_the_poison_fails(list(double.map(range(POISONED_MAP), return_exceptions=True)))


def test_a_poison_input_fails_alone_under_input_concurrency(app):
    @app.function(max_containers=1)
    @rc.concurrent(max_inputs=4)
    def double(x):
        if x == POISON:
            os._exit(3)
        return x * 2

    _only_the_poison_fails(list(double.map(range(POISONED_MAP), return_exceptions=True)))


def test_a_poison_input_fails_alone_in_a_batched_function(app):
    @app.function(max_containers=1)
    @rc.batched(max_batch_size=8, wait_ms=5)
    def double(xs):
        if POISON in xs:
            os._exit(3)  # the whole batch dies with it: its batch-mates run again, each in a batch of its own
        return [x * 2 for x in xs]

    _only_the_poison_fails(list(double.map(range(POISONED_MAP), return_exceptions=True)))
