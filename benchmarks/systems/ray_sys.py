"""Ray core: a fresh local cluster with 2 CPUs (2 task workers), no dashboard."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import ray
from common import descendants

PACKAGES = ["ray", "numpy", "grpcio"]


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.actor: Any = None

    def start(self) -> None:
        # address="local": always a new cluster owned by this process, never one found running.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="warning",
            object_store_memory=2 * 1024**3,
        )
        self.task = ray.remote(self.code.inc)
        self.ident = ray.remote(self.code.identity)
        self.pinger = ray.remote(self.code.Pinger)  # actors of one class: exported on first use
        assert ray.get(self.task.remote(1)) == 2

    def callers(self) -> dict[str, Callable[[int], Any]]:
        if self.actor is None:
            self.actor = ray.remote(self.code.Adder).remote()
            ray.get(self.actor.f.remote(0))
        return {
            "main": lambda x: ray.get(self.task.remote(x)),
            "actor": lambda x: ray.get(self.actor.f.remote(x)),
        }

    def identity(self, value: Any) -> Any:
        return ray.get(self.ident.remote(value))

    def tidy(self) -> None:
        pass

    @contextlib.contextmanager
    def fresh_worker(self) -> Iterator[Callable[[], int]]:
        actors = []

        def start() -> int:
            actors.append(self.pinger.remote())
            return ray.get(actors[-1].ping.remote())

        try:
            yield start
        finally:
            for actor in actors:
                ray.kill(actor)

    def pids(self) -> list[int]:
        return descendants(os.getpid())

    def stop(self) -> None:
        if self.actor is not None:
            ray.kill(self.actor)
        ray.shutdown()
