"""The systems the harness measures: how to run each one, and the interface its module implements.

Each system lives in ``systems/<name>_sys.py`` with a ``Session`` class (see the
protocol below) and runs in its own process (``agent.py``), with the Python of
its own venv. Standard library only: the harness imports this in the project venv.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

VENV_ROOT = Path(
    os.environ.get("REMOTECELL_BENCH_VENVS", Path.home() / ".cache" / "remotecell-bench")
)


class RemoteCode(Protocol):
    """What runs remotely, defined in the agent's ``__main__`` so every system ships it by value."""

    inc: Callable[[int], int]
    identity: Callable[[Any], Any]
    Adder: type  # an actor-style class with ``f(self, x) = x + 1``
    Pinger: type  # ``setup(self)`` does nothing; ``ping(self)`` returns the worker's pid
    nap: Callable[[float], int]  # sleeps that many seconds, returns the worker's pid


class Session(Protocol):
    """A running system, as the workloads see it.

    A workload that needs more names the method in ``Workload.needs``; systems
    without it show "—" for that workload. Such methods so far:

    * ``fresh_worker()``: a context manager whose value, called, starts one new
      worker (process) from zero and returns its pid once it answered a first
      call; leaving the context stops that worker (``container_cold``).
    * ``nap_pool(max_containers)``: a context manager whose value ``burst(n, s)``
      runs ``nap(s)`` n times concurrently on a new pool of at most
      ``max_containers`` workers that starts from zero, and returns the pids;
      leaving the context stops the pool (``scaling``).
    * ``batched_pool(replicas, batched)``: a context manager whose value has
      ``async call(x)`` (one request: ``x`` is a list of ints, the answer its sum)
      served by ``replicas`` workers, through the system's dynamic batching
      (max_batch_size 32, wait 10 ms) when ``batched``, and ``async batches()``: the
      (batches, items) run so far, or None where the system cannot tell (``batched``).
    * ``map(xs)``: ``[inc(x) for x in xs]``, computed on the workers through the
      system's own way of fanning out many independent tasks (``map``).
    * ``spawners()``: a context manager whose value maps each of ``sequential``,
      ``gather`` and ``spawn_map`` to a function ``spawn(n)`` that submits
      ``inc(0) .. inc(n - 1)`` as durable calls and returns once all were
      accepted, with a callable that waits for and returns their results in
      order (called outside the timed region) (``spawn``).

    The basic methods are needed only by the workloads that use them: a system
    without ``callers`` or ``identity`` shows "—" for latency or the round trip.
    """

    def __init__(self, code: RemoteCode) -> None: ...

    def start(self) -> None:
        """Start the system and return once ``inc(1) == 2`` came back from a worker."""

    def callers(self) -> dict[str, Callable[[int], Any]]:
        """Blocking calls of ``inc``: the first is the system's main row, others get their own."""

    def identity(self, value: Any) -> Any:
        """Send ``value`` to a worker and return what ``identity`` sent back."""

    def tidy(self) -> None:
        """Drop cached results between timed runs (outside the timed region)."""

    def pids(self) -> list[int]:
        """Every process the system started (memory sums their RSS; they are reaped at the end)."""

    def stop(self) -> None:
        """Stop everything the system started, through its own API."""


def remotecell_daemon_pids(env: dict[str, str]) -> list[int]:
    """The local runtime of a REMOTECELL_HOME and its containers (for clean-up after a crash)."""
    from common import descendants

    try:
        pid = int(json.loads((Path(env["REMOTECELL_HOME"]) / "connection.json").read_text())["pid"])
    except (OSError, KeyError, ValueError):
        return []
    return [pid, *descendants(pid)]


@dataclass(frozen=True)
class SystemSpec:
    name: str  # the --systems name
    label: str  # the table's row label
    api: str  # what the main row calls, for the README and the JSON
    venv: str | None = None  # None: the project venv (the harness's own Python)
    env: dict[str, str] = field(default_factory=dict)
    fresh_dir_env: str | None = None  # an env var set to a new empty directory per process
    leftovers: Callable[[dict[str, str]], list[int]] | None = None  # pids to kill if the agent died
    impl: str = ""  # the systems/<impl>_sys.py module, when not the name's
    venv_env: str = ""  # an env var naming the venv to use instead (remotecell_base: an older checkout's)

    @property
    def module(self) -> str:
        return f"systems.{self.impl or self.name}_sys"

    @property
    def python(self) -> Path:
        if self.venv_env:
            return Path(os.environ.get(self.venv_env, "/nonexistent")) / "bin" / "python"
        return (
            Path(sys.executable) if self.venv is None else VENV_ROOT / self.venv / "bin" / "python"
        )

    def missing(self) -> str | None:
        """Why this system cannot run here (with the fix), or None."""
        if self.python.exists():
            return None
        if self.venv_env:
            return (f"{self.name}: set {self.venv_env} to the venv of the checkout to compare with "
                    "(see benchmarks/README.md, 'Before and after')")
        return (
            f"{self.name}: no venv at {self.python.parent.parent}; create it with "
            f"`bash benchmarks/setup_envs.sh {self.venv}`"
        )


SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in [
        SystemSpec(
            "remotecell",
            "remotecell",
            "`f.remote(x)` (app.function, local runtime over ipc://)",
            fresh_dir_env="REMOTECELL_HOME",
            leftovers=remotecell_daemon_pids,
        ),
        SystemSpec(
            "remotecell_nospares",
            "remotecell, no spare containers",
            "as remotecell, with REMOTECELL_SPARE_CONTAINERS=0: every new container a new process",
            fresh_dir_env="REMOTECELL_HOME",
            leftovers=remotecell_daemon_pids,
            impl="remotecell",
            env={"REMOTECELL_SPARE_CONTAINERS": "0"},
        ),
        SystemSpec(
            "remotecell_base",
            "remotecell (before)",
            "as remotecell, from the checkout whose venv REMOTECELL_BENCH_BASE names",
            fresh_dir_env="REMOTECELL_HOME",
            leftovers=remotecell_daemon_pids,
            impl="remotecell",
            venv_env="REMOTECELL_BENCH_BASE",
        ),
        SystemSpec(
            "ipp",
            "ipyparallel (2 engines)",
            "`rc[0].apply_sync(f, x)` (DirectView)",
            venv="ipp",
            env={"IPYTHONDIR": str(VENV_ROOT / "ipython-dir")},
        ),
        SystemSpec(
            "ray",
            "Ray (2 workers)",
            "`ray.get(f.remote(x))` (task); `: actor` row: actor method",
            venv="ray",
            env={"RAY_USAGE_STATS_ENABLED": "0"},
            fresh_dir_env="RAY_TMPDIR",  # its session logs go away with the harness's scratch
        ),
        SystemSpec(
            "dask",
            "Dask (2 workers)",
            "`client.submit(f, x, pure=False).result()`; map: `client.gather(client.map(f, xs, "
            "pure=False))` (LocalCluster, 2 worker processes, 1 thread each)",
            venv="dask",
        ),
        SystemSpec(
            "zmq",
            "raw pyzmq + cloudpickle (floor)",
            "DEALER client, 2 worker processes, cloudpickled calls over ipc://",
        ),
    ]
}
