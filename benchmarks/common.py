"""Helpers shared by the harness and every system's agent: timing, statistics, processes.

Standard library only: this module is imported in the project venv and in each
anchor's own venv (ipyparallel, Ray), which have nothing else in common.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

now = time.perf_counter

LATENCY_WARMUP = 200
LATENCY_CALLS = 2000
ARRAY_ELEMS = 25_000_000  # float32: 10**8 bytes = 100 MB
ARRAY_BYTES = ARRAY_ELEMS * 4

RESULT_PREFIX = (
    "@@bench "  # agent -> harness lines start with this; anything else is passed through
)


# -- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of a sorted list."""
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_stats_us(samples_s: list[float]) -> dict[str, float]:
    s = sorted(x * 1e6 for x in samples_s)
    return {
        "p50_us": percentile(s, 0.50),
        "p90_us": percentile(s, 0.90),
        "p99_us": percentile(s, 0.99),
        "mean_us": statistics.fmean(s),
        "max_us": s[-1],
    }


def summarize(values: Iterable[float]) -> dict[str, float]:
    vals = list(values)
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# -- timing -----------------------------------------------------------------------------------


def timed_latency(
    call: Callable[[int], Any], warmup: int = LATENCY_WARMUP, calls: int = LATENCY_CALLS
) -> dict[str, float]:
    """Sequential blocking calls of f(i) = i + 1 (checked); per-call percentiles in µs."""
    for i in range(warmup):
        call(i)
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(calls):
            t0 = now()
            result = call(i)
            samples.append(now() - t0)
            if result != i + 1:
                raise AssertionError(f"f({i}) returned {result!r}")
    finally:
        if gc_was_enabled:
            gc.enable()
    return latency_stats_us(samples)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = now()
    result = fn()
    return now() - t0, result


# -- processes (read from /proc; psutil is not everywhere) ------------------------------------


def _stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/pid/stat after the name (state, ppid, pgrp, ...)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = f.read().rsplit(")", 1)[1].split()  # names may hold ")"
            except OSError:
                pass
    return out


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, fields in _stats().items():
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (they stay in it after their parent died)."""
    return [pid for pid, fields in _stats().items() if int(fields[2]) == pgid and fields[0] != "Z"]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), not ``pid`` itself."""
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _status_kib(pid: int, field: str, path: str = "status") -> int:
    with open(f"/proc/{pid}/{path}") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def process_memory(pid: int) -> dict[str, Any] | None:
    """RSS (VmRSS) and PSS of one process in MiB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            name = f.read().strip()
        rss = _status_kib(pid, "VmRSS")
        try:
            pss = _status_kib(pid, "Pss", "smaps_rollup")
        except OSError:
            pss = rss
    except (OSError, ValueError):
        return None
    return {"pid": pid, "name": name, "rss_mib": rss / 1024, "pss_mib": pss / 1024}


def footprint(pids: Iterable[int]) -> dict[str, Any]:
    """Summed RSS (and PSS, which splits shared pages fairly) of a set of processes."""
    procs = [m for m in map(process_memory, sorted(set(pids))) if m is not None]
    return {
        "rss_mib": sum(p["rss_mib"] for p in procs),
        "pss_mib": sum(p["pss_mib"] for p in procs),
        "processes": len(procs),
        "detail": procs,
    }


def wait_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Wait for processes to exit (zombies count as gone); those still alive after ``timeout_s``."""
    pending = [p for p in set(pids) if p != os.getpid()]
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [p for p in pending if alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.05)


def reap(pids: Iterable[int], grace_s: float = 10.0) -> list[int]:
    """Wait for processes to exit by themselves, then SIGKILL (by pid) those still there."""
    pending = wait_gone(pids, grace_s)
    for p in pending:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pending


# -- misc ---------------------------------------------------------------------------------------


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def emit(obj: dict[str, Any]) -> None:
    """One result line for the harness (it ignores any other output)."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
