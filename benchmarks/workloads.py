"""The registry of workloads: how each is measured (in a system's agent) and shown (in the table).

A workload measured inside a running system has a ``measure(session, runs)``
that returns ``{row: [metrics of one run, ...]}`` (row "main" is the system's
own row; others, e.g. Ray's "actor", get rows of their own). The cold start is
measured by the harness itself, launching fresh processes (``measure=None``).
To add a workload: write its ``measure`` and ``cell``, and add it to WORKLOADS.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from common import ARRAY_BYTES, ARRAY_ELEMS, footprint, latency_stats_us, timed, timed_latency, wait_gone

Runs = dict[str, list[dict[str, Any]]]

WORKER_EXIT_S = 30  # a worker stopped after its run must be gone by then
REUSED_ROW = "worker already running"  # container_cold's row for runs that started no process
COLD_TRIES = 3
SCALING_INPUTS = 8
SCALING_SLEEP_S = 1.0
SCALING_MAX_CONTAINERS = (2, 8)
MAP_TASKS = 10_000
MAP_WARMUP = 500
SPAWN_CALLS = 10_000
SPAWN_MODES = ("sequential", "gather", "spawn_map")  # see Session.spawners


@dataclass(frozen=True)
class Workload:
    name: str
    title: str  # the table's column header
    runs: int  # default number of runs, spread over the rounds
    ratio_metric: str  # the metric the "(N×)" ratio to remotecell is taken on (lower is better)
    cell: Callable[[dict[str, float]], str]  # median metrics -> table text
    measure: Callable[[Any, int], Runs] | None = None  # None: measured by launching processes
    first: bool = False  # measure before anything else in a session (it wants an untouched system)
    needs: str | None = None  # a Session method beyond the basic ones


# -- measure (runs in the agent) ----------------------------------------------------------------


def measure_latency(session: Any, runs: int) -> Runs:
    out: Runs = {}
    for row, call in session.callers().items():
        out[row] = []
        for _ in range(runs):
            out[row].append(timed_latency(call))
            session.tidy()
    return out


def _check_same(sent: Any, got: Any) -> None:
    """Equal, and a copy that came back (not the very buffer that was sent)."""
    import numpy as np

    if got.shape != sent.shape or got.dtype != sent.dtype or not np.array_equal(got, sent):
        raise AssertionError("identity returned a different array")
    if np.may_share_memory(got, sent):
        raise AssertionError("identity returned the caller's own buffer, not a copy")


def measure_roundtrip(session: Any, runs: int) -> Runs:
    import numpy as np

    arr = np.random.default_rng(0).random(ARRAY_ELEMS, dtype=np.float32)
    _check_same(arr, session.identity(arr))  # warm-up
    session.tidy()
    out = []
    for _ in range(runs):
        seconds, got = timed(lambda: session.identity(arr))
        _check_same(arr, got)
        del got
        session.tidy()
        out.append({"seconds": seconds, "GBps": 2 * ARRAY_BYTES / seconds / 1e9})
    return {"main": out}


def measure_memory(session: Any, runs: int) -> Runs:
    time.sleep(1.0)  # let the system settle into idle
    mem = footprint(session.pids())
    return {
        "main": [
            {
                "rss_mib": mem["rss_mib"],
                "pss_mib": mem["pss_mib"],
                "processes": mem["processes"],
                "detail": mem["detail"],
            }
        ]
    }


def _check_gone(pids: Iterable[int]) -> None:
    """The workers a run started and stopped are gone, so the next run starts from zero."""
    left = wait_gone(pids, WORKER_EXIT_S)
    if left:
        raise AssertionError(f"workers {left} still run {WORKER_EXIT_S} s after they were stopped")


def measure_container_cold(session: Any, runs: int) -> Runs:
    """``runs`` starts of a new worker process (main row). A start that got a process the system
    already had running (Ray gives an actor an idle pooled worker) goes to a row of its own and
    is not counted, up to ``COLD_TRIES`` × ``runs`` tries in all."""
    out: Runs = {"main": [], REUSED_ROW: []}
    for _ in range(COLD_TRIES * runs):
        if len(out["main"]) == runs:
            break
        before = set(session.pids())
        with session.fresh_worker() as start:
            seconds, pid = timed(start)
        _check_gone([pid])
        out["main" if pid not in before else REUSED_ROW].append({"ms": seconds * 1e3})
    return {row: rows for row, rows in out.items() if rows}


def measure_scaling(session: Any, runs: int) -> Runs:
    out = []
    for _ in range(runs):
        run = {}
        for n in SCALING_MAX_CONTAINERS:
            with session.nap_pool(n) as burst:
                seconds, pids = timed(functools.partial(burst, SCALING_INPUTS, SCALING_SLEEP_S))
            _check_gone(pids)
            run[f"max{n}_s"] = seconds
            run[f"max{n}_containers"] = len(set(pids))  # how many workers the inputs ran on
        out.append(run)
    return {"main": out}


BATCH_REQUESTS = 2000  # issued at once, each a single item
BATCH_WARMUP = 200
BATCH_SEQUENTIAL = 200  # one caller, one request at a time: the lone request's latency
BATCH_ITEM = list(range(8))  # each request's item; the function returns its sum
BATCHED_ROWS = {"main": (1, True), "batched x2": (2, True), "unbatched x1": (1, False)}


async def _burst(call: Callable[[Any], Any], n: int) -> tuple[float, list[float]]:
    """``n`` requests at once (one asyncio.gather); wall seconds and each request's latency."""
    latencies = [0.0] * n

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        result = await call(BATCH_ITEM)
        latencies[i] = time.perf_counter() - t0
        if result != sum(BATCH_ITEM):
            raise AssertionError(f"request {i} got {result!r}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, latencies


async def _sequential(call: Callable[[Any], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call(BATCH_ITEM)
        out.append(time.perf_counter() - t0)
    return out


async def _measure_pool(pool: Any, runs: int) -> list[dict[str, float]]:
    await _burst(pool.call, BATCH_WARMUP)
    out = []
    for _ in range(runs):
        before = await pool.batches()
        seconds, latencies = await _burst(pool.call, BATCH_REQUESTS)
        after = await pool.batches()
        lat = latency_stats_us(latencies)
        run = {"requests_per_s": BATCH_REQUESTS / seconds, "us_per_request": seconds / BATCH_REQUESTS * 1e6,
               "p50_ms": lat["p50_us"] / 1e3, "p99_ms": lat["p99_us"] / 1e3}
        if before is not None and after is not None and after[0] > before[0]:
            run["mean_batch"] = (after[1] - before[1]) / (after[0] - before[0])
        out.append(run)
    lone = latency_stats_us((await _sequential(pool.call, BATCH_SEQUENTIAL))[20:])
    for run in out:
        run["lone_p50_ms"] = lone["p50_us"] / 1e3
    return out


def measure_batched(session: Any, runs: int) -> Runs:
    """2,000 single-item requests at once to a function that sums its items (batches of 32, 10 ms)."""
    out: Runs = {}
    for row, (replicas, batched) in BATCHED_ROWS.items():
        with session.batched_pool(replicas, batched) as pool:
            out[row] = asyncio.run(_measure_pool(pool, runs))
    return out


def _check_incremented(xs: range, got: Any, what: str) -> None:
    if not isinstance(got, list) or got != [x + 1 for x in xs]:
        head = got[:5] if isinstance(got, list) else got
        raise AssertionError(f"{what}: expected [1, 2, ...] ({len(xs)} items), got {head!r}...")


def measure_map(session: Any, runs: int) -> Runs:
    """``MAP_TASKS`` independent ``inc`` tasks through the system's map, all results gathered."""
    _check_incremented(range(MAP_WARMUP), session.map(range(MAP_WARMUP)), "map warm-up")
    session.tidy()
    out = []
    for _ in range(runs):
        xs = range(MAP_TASKS)
        seconds, got = timed(lambda: session.map(xs))  # noqa: B023 (called at once)
        _check_incremented(xs, got, "map")
        del got
        session.tidy()
        out.append({"tasks_per_s": MAP_TASKS / seconds, "seconds": seconds, "load1": os.getloadavg()[0]})
    return {"main": out}


def measure_spawn(session: Any, runs: int) -> Runs:
    """``SPAWN_CALLS`` durable spawns of ``inc`` in each mode; accepted per second. After the
    timed region, every call's result is fetched and checked (nothing lost), which also drains
    the pool before the next mode."""
    out = []
    with session.spawners() as modes:
        for _ in range(runs):
            run = {}
            for mode in SPAWN_MODES:
                seconds, collect = timed(functools.partial(modes[mode], SPAWN_CALLS))
                _check_incremented(range(SPAWN_CALLS), collect(), f"spawn {mode}")
                run[f"{mode}_per_s"] = SPAWN_CALLS / seconds
                run[f"{mode}_s"] = seconds
            run["load1"] = os.getloadavg()[0]  # the 1-minute load average after the run (noisy machine)
            out.append(run)
    return {"main": out}


# -- cells (in the harness) ---------------------------------------------------------------------


def _cell_latency(m: dict[str, float]) -> str:
    return f"{m['p50_us']:,.0f} / {m['p90_us']:,.0f} / {m['p99_us']:,.0f}"


def _cell_roundtrip(m: dict[str, float]) -> str:
    return f"{m['seconds']:.3f} s = {m['GBps']:.2f} GB/s"


def _cell_cold(m: dict[str, float]) -> str:
    return f"{m['launch_to_result_s']:.2f}"


def _cell_container_cold(m: dict[str, float]) -> str:
    return f"{m['ms']:,.0f}"


def _cell_scaling(m: dict[str, float]) -> str:
    return " / ".join(
        f"{m[f'max{n}_s']:.2f} ({m[f'max{n}_containers']:.0f} ctrs)" for n in SCALING_MAX_CONTAINERS
    )


def _cell_batched(m: dict[str, float]) -> str:
    batch = f", batch {m['mean_batch']:.1f}" if "mean_batch" in m else ""
    return (f"{m['requests_per_s']:,.0f}/s, p50 {m['p50_ms']:.0f} / p99 {m['p99_ms']:.0f} ms{batch}, "
            f"lone {m['lone_p50_ms']:.1f} ms")


def _cell_map(m: dict[str, float]) -> str:
    return f"{m['tasks_per_s']:,.0f}"


def _cell_spawn(m: dict[str, float]) -> str:
    return " / ".join(f"{m[f'{mode}_per_s']:,.0f}" for mode in SPAWN_MODES)


def _cell_memory(m: dict[str, float]) -> str:
    return f"{m['rss_mib']:,.0f} ({m['processes']:.0f} procs)"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "latency",
            "warm call p50 / p90 / p99 µs",
            3,
            "p50_us",
            _cell_latency,
            measure_latency,
            needs="callers",
        ),
        Workload(
            "roundtrip",
            "100 MB there and back, s (GB/s both ways)",
            5,
            "seconds",
            _cell_roundtrip,
            measure_roundtrip,
            needs="identity",
        ),
        Workload(
            "cold",
            "cold start → 1st result, s (incl. interpreter)",
            3,
            "launch_to_result_s",
            _cell_cold,
        ),
        Workload(
            "container_cold",
            "new worker from zero → 1st result, ms (system running)",
            5,
            "ms",
            _cell_container_cold,
            measure_container_cold,
            needs="fresh_worker",
        ),
        Workload(
            "memory",
            "idle RSS MiB (processes)",
            3,
            "rss_mib",
            _cell_memory,
            measure_memory,
            first=True,
        ),
        Workload(
            "scaling",
            f"{SCALING_INPUTS} × sleep({SCALING_SLEEP_S:g} s) at once from zero, s: "
            + " / ".join(f"max_containers={n}" for n in SCALING_MAX_CONTAINERS),
            3,
            "max8_s",
            _cell_scaling,
            measure_scaling,
            needs="nap_pool",
        ),
        Workload(
            "batched",
            f"{BATCH_REQUESTS:,} single-item requests at once, batched (32, 10 ms): requests/s, latency, "
            "mean batch; lone request",
            3,
            "us_per_request",
            _cell_batched,
            measure_batched,
            needs="batched_pool",
        ),
        Workload(
            "map",
            f"{MAP_TASKS:,} × f(x)=x+1 through map, tasks/s",
            3,
            "seconds",
            _cell_map,
            measure_map,
            needs="map",
        ),
        Workload(
            "spawn",
            f"{SPAWN_CALLS:,} durable spawns, accepted/s: sequential `f.spawn` / "
            "`gather(f.spawn.aio)` × 1,000 / `f.spawn_map`",
            3,
            "sequential_s",
            _cell_spawn,
            measure_spawn,
            needs="spawners",
        ),
    ]
}
