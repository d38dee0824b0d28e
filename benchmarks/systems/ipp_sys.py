"""ipyparallel: a local Cluster(n=2) (controller + 2 engines), calls through a DirectView.

A new worker (``container_cold``) is one more engine set of 1 engine, stopped after the run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ipyparallel as ipp
from common import descendants

PACKAGES = ["ipyparallel", "ipykernel", "jupyter_client", "pyzmq", "numpy"]
ENGINE_TIMEOUT_S = 60
MAP_TIMEOUT_S = 600


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.cluster = ipp.Cluster(n=2, log_level=30, controller_ip="127.0.0.1")

    def start(self) -> None:
        self.client = self.cluster.start_and_connect_sync()
        self.view = self.client[0]
        self.lview: Any = None
        assert self.view.apply_sync(self.code.inc, 1) == 2

    def callers(self) -> dict[str, Callable[[int], Any]]:
        return {"main": lambda x: self.view.apply_sync(self.code.inc, x)}

    def identity(self, value: Any) -> Any:
        return self.view.apply_sync(self.code.identity, value)

    def map(self, xs: Iterable[int]) -> list[int]:
        if self.lview is None:
            self.lview = self.client.load_balanced_view()
        # chunksize=1: one task per input, as the anchors measured it
        return self.lview.map_async(self.code.inc, xs, chunksize=1).get(timeout=MAP_TIMEOUT_S)

    def tidy(self) -> None:
        self.client.purge_everything()  # the hub and the client keep every result otherwise

    @contextlib.contextmanager
    def fresh_worker(self) -> Iterator[Callable[[], int]]:
        known = set(self.client.ids)
        engine_sets = []

        def start() -> int:
            engine_sets.append(self.cluster.start_engines_sync(n=1))
            return self.client[self.new_engine(known)].apply_sync(os.getpid)

        try:
            yield start
        finally:
            for engine_set in engine_sets:
                self.cluster.stop_engines_sync(engine_set)

    def new_engine(self, known: set[int]) -> int:
        """The id of an engine that registered and is not in ``known``."""
        deadline = time.monotonic() + ENGINE_TIMEOUT_S
        while not (new := set(self.client.ids) - known):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new engine registered within {ENGINE_TIMEOUT_S} s")
            time.sleep(0.002)
        return max(new)

    def pids(self) -> list[int]:
        return descendants(os.getpid())

    def stop(self) -> None:
        self.client.close()
        self.cluster.stop_cluster_sync()
