"""remotecell: an app with two functions on the local runtime (started on the first call).

The runtime lives in $REMOTECELL_HOME (the harness gives every process a fresh
one), as a daemon of its own session with one container process per function.
New workers (``container_cold``, ``scaling``) come from functions of a new app,
which starts with no container and is stopped after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import remotecell as rc
from common import alive, descendants
from remotecell import _client

PACKAGES = ["remotecell", "pyzmq", "cloudpickle", "numpy"]


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.app = rc.App("bench")
        self.inc = self.app.function()(code.inc)
        self.ident = self.app.function()(code.identity)
        rc.enter()(code.Pinger.setup)  # marks the methods' roles (in this agent's copy)
        rc.method()(code.Pinger.ping)
        self.apps = itertools.count(1)

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

    @contextlib.contextmanager
    def fresh_worker(self) -> Iterator[Callable[[], int]]:
        with self.fresh_app("cold") as app:
            pinger = app.cls(max_containers=1)(self.code.Pinger)
            yield pinger().ping.remote  # the first call registers the class and starts its container

    @contextlib.contextmanager
    def nap_pool(self, max_containers: int) -> Iterator[Callable[[int, float], list[int]]]:
        with self.fresh_app("scale") as app:
            nap = app.function(max_containers=max_containers)(self.code.nap)
            if nap.stats()["containers"]:  # registers it: the burst then times only the calls
                raise AssertionError(f"a new function has containers already: {nap.stats()}")

            async def burst(n: int, seconds: float) -> list[int]:
                return list(await asyncio.gather(*(nap.remote.aio(seconds) for _ in range(n))))

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
        self.app.stop()
        _client.connection().request({"t": "shutdown"})
        _client.reset_connection()
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
