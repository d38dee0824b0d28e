"""remotecell: an app with two functions on the local runtime (started on the first call).

The runtime lives in $REMOTECELL_HOME (the harness gives every process a fresh
one), as a daemon of its own session with one container process per function.
New workers (``container_cold``, ``scaling``) come from functions of a new app,
which starts with no container and is stopped after the run. ``map`` and
``spawn`` run on a function of a new app with ``min_containers=2,
max_containers=2`` (both containers warm before any timing; the app is stopped
when the session ends, or after the spawn runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import remotecell as rc
from common import alive, descendants
from remotecell import _client

PACKAGES = ["remotecell", "pyzmq", "cloudpickle", "numpy"]
POOL_CONTAINERS = 2  # map and spawn: as many warm containers as the anchors have workers
WARM_TIMEOUT_S = 60
SPAWN_WINDOW = 1_000  # spawn "gather": this many f.spawn.aio at once, one window after another


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.app = rc.App("bench")
        self.inc = self.app.function()(code.inc)
        self.ident = self.app.function()(code.identity)
        rc.enter()(code.Pinger.setup)  # marks the methods' roles (in this agent's copy)
        rc.method()(code.Pinger.ping)
        self.apps = itertools.count(1)
        self.pools = contextlib.ExitStack()  # apps kept for the session (map's pool)
        self.map_fn: Any = None

    def start(self) -> None:
        assert self.inc.remote(1) == 2

    def callers(self) -> dict[str, Callable[[int], Any]]:
        return {"main": self.inc.remote}

    def identity(self, value: Any) -> Any:
        return self.ident.remote(value)

    def tidy(self) -> None:
        pass

    @contextlib.contextmanager
    def fresh_app(self, kind: str) -> Iterator[rc.App]:
        """A new app on the running runtime: its functions start with no container; stopped after."""
        app = rc.App(f"bench-{kind}-{next(self.apps)}")
        with app.run():
            yield app

    def warm_pool(self, app: rc.App) -> Any:
        """``inc`` on a new function of ``app`` with POOL_CONTAINERS containers, all started and idle."""
        fn = app.function(min_containers=POOL_CONTAINERS, max_containers=POOL_CONTAINERS)(
            self.code.inc
        )
        deadline = time.monotonic() + WARM_TIMEOUT_S
        while (stats := fn.stats())["containers"].get("idle", 0) < POOL_CONTAINERS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{POOL_CONTAINERS} containers not idle within {WARM_TIMEOUT_S} s: {stats}")
            time.sleep(0.05)
        return fn

    def map(self, xs: Iterable[int]) -> list[int]:
        if self.map_fn is None:
            self.map_fn = self.warm_pool(self.pools.enter_context(self.fresh_app("map")))
        return list(self.map_fn.map(xs))

    @contextlib.contextmanager
    def spawners(self) -> Iterator[dict[str, Callable[[int], Callable[[], list[int]]]]]:
        with self.fresh_app("spawn") as app:
            fn = self.warm_pool(app)

            def collect(handles: list[Any]) -> Callable[[], list[int]]:
                async def results() -> list[int]:
                    out: list[int] = []
                    for i in range(0, len(handles), SPAWN_WINDOW):
                        window = handles[i : i + SPAWN_WINDOW]
                        out += await asyncio.gather(*(h.get.aio(timeout=120) for h in window))
                    return out

                return lambda: asyncio.run(results())

            def sequential(n: int) -> Callable[[], list[int]]:
                return collect([fn.spawn(i) for i in range(n)])

            def gather(n: int) -> Callable[[], list[int]]:
                async def spawn_all() -> list[Any]:
                    handles: list[Any] = []
                    for i in range(0, n, SPAWN_WINDOW):
                        window = range(i, min(i + SPAWN_WINDOW, n))
                        handles += await asyncio.gather(*(fn.spawn.aio(j) for j in window))
                    return handles

                return collect(asyncio.run(spawn_all()))

            def spawn_map(n: int) -> Callable[[], list[int]]:
                group = fn.spawn_map(range(n))

                def results() -> list[int]:
                    last = group.get(index=n - 1, timeout=120)
                    got = collect([group.call(i) for i in range(n)])()
                    status = group.status()
                    if last != n or status != {"succeeded": n}:
                        raise AssertionError(f"spawn_map: last result {last!r}, status {status}")
                    return got

                return results

            yield {"sequential": sequential, "gather": gather, "spawn_map": spawn_map}

    @contextlib.contextmanager
    def fresh_worker(self) -> Iterator[Callable[[], int]]:
        with self.fresh_app("cold") as app:
            ping = app.cls(max_containers=1)(self.code.Pinger)().ping

            def start() -> int:  # the first call registers the class and starts its container
                pid = ping.remote()
                return _host_pids(ping.stats(), [pid])[0]  # one status ask more: its pid on this host

            yield start

    @contextlib.contextmanager
    def nap_pool(self, max_containers: int) -> Iterator[Callable[[int, float], list[int]]]:
        with self.fresh_app("scale") as app:
            nap = app.function(max_containers=max_containers)(self.code.nap)
            if nap.stats()["containers"]:  # registers it: the burst then times only the calls
                raise AssertionError(f"a new function has containers already: {nap.stats()}")

            async def burst(n: int, seconds: float) -> list[int]:
                pids = list(await asyncio.gather(*(nap.remote.aio(seconds) for _ in range(n))))
                return _host_pids(await nap.stats.aio(), pids)  # one status ask, its containers still there

            yield lambda n, seconds: asyncio.run(burst(n, seconds))

    @contextlib.contextmanager
    def batched_pool(self, replicas: int, batched: bool) -> Iterator[Any]:
        """``summed`` as ``@rc.batched(max_batch_size=32, wait_ms=10)`` (or ``total``, unbatched) on
        ``replicas`` warm containers of a new app."""
        with self.fresh_app("batched") as app:
            warm = {"min_containers": replicas, "max_containers": replicas}
            if batched:
                fn = app.function(**warm)(rc.batched(max_batch_size=32, wait_ms=10)(self.code.summed))
            else:
                fn = app.function(**warm)(self.code.total)
            while fn.stats()["containers"].get("idle", 0) < replicas:  # registered; wait for them warm
                time.sleep(0.05)

            async def batches() -> tuple[int, int] | None:
                if not batched:
                    return None
                stats = await fn.batch_stats.aio()
                return stats["batches"], stats["items"]

            yield SimpleNamespace(call=fn.remote.aio, batches=batches)

    def daemon_pid(self) -> int:
        home = Path(os.environ["REMOTECELL_HOME"])
        return int(json.loads((home / "connection.json").read_text())["pid"])

    def pids(self) -> list[int]:
        pid = self.daemon_pid()
        return [pid, *descendants(pid)]

    def stop(self) -> None:
        pid = self.daemon_pid()
        self.pools.close()
        self.app.stop()
        _client.connection().request({"t": "shutdown"})
        _client.reset_connection()
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGTERM)


def _host_pids(stats: dict[str, Any], returned: list[int]) -> list[int]:
    """The host pids of a new app's function's containers (the ones its calls started), from the
    placements of its ``stats`` ("pid N on this host"): a sandboxed container's own pid is 2 of its
    namespace. A checkout from before placements (``remotecell_base``) runs plain processes: the pids
    they ``returned``."""
    placements = stats.get("placements")
    return returned if placements is None else [int(p.split()[1]) for p in placements.values()]
