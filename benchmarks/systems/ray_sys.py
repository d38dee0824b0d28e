"""Ray core: a fresh local cluster with 2 CPUs (2 task workers), no dashboard."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import ray
from common import descendants

PACKAGES = ["ray", "numpy", "grpcio", "fastapi", "starlette"]


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.actor: Any = None
        self.serve_started = False

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

    def map(self, xs: Iterable[int]) -> list[int]:
        return ray.get([self.task.remote(x) for x in xs])

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

    @contextlib.contextmanager
    def batched_pool(self, replicas: int, batched: bool) -> Iterator[Any]:
        """Ray Serve: a deployment of ``replicas`` replicas, called through its handle (no HTTP proxy);
        ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)`` when ``batched``."""
        from ray import serve

        if not self.serve_started:
            serve.start(proxy_location="Disabled")
            self.serve_started = True
        summed, total = self.code.summed, self.code.total

        @serve.deployment(max_ongoing_requests=2048, ray_actor_options={"num_cpus": 0})
        class Batched:
            def __init__(self) -> None:
                self.batches = self.items = 0

            @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
            async def run(self, xs: list[Any]) -> list[int]:
                self.batches += 1
                self.items += len(xs)
                return summed(xs)

            async def __call__(self, x: Any) -> int:
                return await self.run(x)

            def counts(self) -> tuple[int, int]:
                return self.batches, self.items

        @serve.deployment(max_ongoing_requests=2048, ray_actor_options={"num_cpus": 0})
        class Plain:
            async def __call__(self, x: Any) -> int:
                return total(x)

        name = f"{'batched' if batched else 'plain'}{replicas}"
        deployment = (Batched if batched else Plain).options(num_replicas=replicas)
        handle = serve.run(deployment.bind(), name=name, route_prefix=None)

        async def call(x: Any) -> Any:
            return await handle.remote(x)

        async def batches() -> tuple[int, int] | None:
            if not batched or replicas > 1:  # a handle call reaches one replica: counts only for one
                return None
            return tuple(await handle.counts.remote())

        try:
            yield SimpleNamespace(call=call, batches=batches)
        finally:
            serve.delete(name)

    def pids(self) -> list[int]:
        return descendants(os.getpid())

    def stop(self) -> None:
        if self.serve_started:
            from ray import serve

            serve.shutdown()
        if self.actor is not None:
            ray.kill(self.actor)
        ray.shutdown()
