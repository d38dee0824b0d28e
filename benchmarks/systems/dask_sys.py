"""Dask distributed: a fresh LocalCluster of 2 worker processes (1 thread each) on loopback.

The scheduler runs inside this (the client's) process, as LocalCluster does;
each worker is a process under a nanny process. Every task is submitted with
``pure=False`` (a new key per call, so nothing is served from a cache).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from common import descendants
from dask.distributed import Client, LocalCluster

PACKAGES = ["dask", "distributed", "tornado", "cloudpickle", "msgpack", "numpy"]
WORKERS = 2


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code

    def start(self) -> None:
        self.cluster = LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        self.client = Client(self.cluster)
        self.client.wait_for_workers(WORKERS, timeout=60)
        assert self.client.submit(self.code.inc, 1, pure=False).result() == 2

    def callers(self) -> dict[str, Callable[[int], Any]]:
        # Sequential submits are paced by the client's batched send (every ~10 ms) by design.
        return {"main": lambda x: self.client.submit(self.code.inc, x, pure=False).result()}

    def identity(self, value: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Large object ... detected in task graph": intended
            return self.client.submit(self.code.identity, value, pure=False).result()

    def map(self, xs: Iterable[int]) -> list[int]:
        return self.client.gather(self.client.map(self.code.inc, xs, pure=False))

    def tidy(self) -> None:
        pass  # results are released when their futures are dropped

    def pids(self) -> list[int]:
        return descendants(os.getpid())

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()
