"""ipyparallel: a local Cluster(n=2) (controller + 2 engines), calls through a DirectView."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ipyparallel as ipp
from common import descendants

PACKAGES = ["ipyparallel", "ipykernel", "jupyter_client", "pyzmq", "numpy"]


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.cluster = ipp.Cluster(n=2, log_level=30, controller_ip="127.0.0.1")

    def start(self) -> None:
        self.client = self.cluster.start_and_connect_sync()
        self.view = self.client[0]
        assert self.view.apply_sync(self.code.inc, 1) == 2

    def callers(self) -> dict[str, Callable[[int], Any]]:
        return {"main": lambda x: self.view.apply_sync(self.code.inc, x)}

    def identity(self, value: Any) -> Any:
        return self.view.apply_sync(self.code.identity, value)

    def tidy(self) -> None:
        self.client.purge_everything()  # the hub and the client keep every result otherwise

    def pids(self) -> list[int]:
        return descendants(os.getpid())

    def stop(self) -> None:
        self.client.close()
        self.cluster.stop_cluster_sync()
