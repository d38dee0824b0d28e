"""Scaling of one pool: when to start a container, what it reserves, when idle ones stop.

The pool wants ``ceil(demand / target_inputs)`` containers (+ ``buffer_containers``
while busy), at least ``min_containers``, at most ``max_containers``; a fast function
whose containers finish the work before a new one could help starts none.  A
container starts only once its image is built and its CPU share and GPUs are
reserved; when they are not free, an idle container of another pool that holds
them is stopped early (``PoolHost.reclaim``).

Invariants: a container's CPU share and GPUs are reserved from ``start`` until its
exit (released in ``Pool.on_exit``); scale-down stops only idle containers past
``scaledown_window`` beyond what the pool keeps, and a leased one is revoked first
rather than stopped; containers are started only through the host's
``ContainerManager`` with a ``ContainerSpec``.  Containers that die before they
are ready ``START_FAILURES`` times in a row fail what waits with their cause and
block new starts for ``START_BLOCK_S`` (inputs that come meanwhile fail at once):
a container that can never start does not restart forever.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from ..backends.base import ContainerExit, ContainerSpec
from ..containers import ContainerRecord, State
from ..cpus import thread_env
from ..images import Build
from ..protocol.errors import ErrorName
from ..protocol.message import encode
from ..protocol.messages.containers import StopMsg
from ..protocol.messages.session import ErrorInfo
from .leases import Leases
from .queue import InputQueue
from .state import PoolState

log = logging.getLogger("remotecell.runtime")

EXIT_GRACE_S = 30.0  # what @exit hooks get at scale-down
STARTUP_S = 0.5  # about what a new container costs before it helps: less queued work than this, don't start one
START_FAILURES = 3  # containers dying before they are ready, in a row, before the pool gives up for a while
START_BLOCK_S = 30.0
AUTOSCALER_RANGES = {"min_containers": (0, 1000), "max_containers": (1, 1000), "buffer_containers": (0, 1000),
                     "scaledown_window_s": (2, 3600)}  # what the client's options allow too


class Scaler:
    def __init__(self, pool: PoolState, queue: InputQueue, leases: Leases) -> None:
        self.pool = pool
        self.queue = queue
        self.leases = leases
        self.failed_starts = 0  # containers in a row that died before they were ready
        self.blocked: tuple[float, ErrorInfo] | None = None  # until when no container starts, and why

    @property
    def min_containers(self) -> int:
        return self.pool.fn.opts.min_containers

    @property
    def buffer_containers(self) -> int:
        return self.pool.fn.opts.buffer_containers

    @property
    def max_containers(self) -> int:
        return self.pool.fn.opts.max_containers

    def update(self, min_containers: int | None, max_containers: int | None, buffer_containers: int | None,
               scaledown_window_s: float | None) -> None:
        """Change the autoscaler of the live pool (Modal's ``update_autoscaler``): None keeps a value. At once: a
        higher minimum starts containers, a lower maximum stops idle ones over it. ValueError names a bad value."""
        opts = self.pool.fn.opts
        new = {"min_containers": opts.min_containers if min_containers is None else min_containers,
               "max_containers": opts.max_containers if max_containers is None else max_containers,
               "buffer_containers": opts.buffer_containers if buffer_containers is None else buffer_containers}
        for name, (low, high) in AUTOSCALER_RANGES.items():
            value = new.get(name, scaledown_window_s)
            if name == "scaledown_window_s" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name.removesuffix('_s')}={value!r} is out of range: allowed {low:g} to {high:g}")
        if new["min_containers"] > new["max_containers"]:
            raise ValueError(f"min_containers={new['min_containers']} is more than "
                             f"max_containers={new['max_containers']}")
        opts.min_containers, opts.max_containers = int(new["min_containers"]), int(new["max_containers"])
        opts.buffer_containers = int(new["buffer_containers"])
        if scaledown_window_s is not None:
            opts.scaledown_window_s = float(scaledown_window_s)
        idle = [c for c in self.pool.live() if c.state is State.IDLE]
        for c in idle[:max(0, len(self.pool.live()) - opts.max_containers)]:
            self.retire(c)
        self.scale()

    def scale(self) -> None:
        """Start containers so that each holds about ``target_inputs`` of the demand."""
        pool = self.pool
        if pool.retired or self._start_blocked():
            return
        fn = pool.fn
        simple = fn.opts.inputs_per_container == fn.opts.max_inputs and not self.buffer_containers
        if simple and not self.queue.waiting and len(pool.containers) >= self.min_containers:
            return  # the hot path: nothing waits, nothing to add
        live = pool.live()
        if len(live) >= self.max_containers:
            return  # a busy pool at its limit (the common case under load): nothing to work out
        # A batch takes one slot: what waits for a batch counts as the batches it will make.
        waiting = len(self.queue.pending) + self.queue.batches.batches_waiting
        demand = waiting + sum(len(c.active) for c in live)
        run_us = self.queue.run_us
        fast = run_us is not None and demand * run_us / 1e6 < STARTUP_S * len(live)
        if fast and len(live) >= self.min_containers:
            return  # the containers there finish this work before a new one could help
        wanted = math.ceil(demand / fn.opts.inputs_per_container) + (self.buffer_containers if demand else 0)
        wanted = min(max(wanted, self.min_containers), self.max_containers)
        for _ in range(wanted - len(live)):
            if not self._start_container():
                break

    def started(self) -> None:
        """A container became ready: the pool can start them."""
        self.failed_starts, self.blocked = 0, None

    def start_failed(self, exit: ContainerExit) -> None:
        """A container died before it was ready; after ``START_FAILURES`` in a row, fail what waits."""
        self.failed_starts += 1
        if self.failed_starts < START_FAILURES:
            return
        lines = "\n".join(exit.tail[-10:])
        error = ErrorInfo(type=ErrorName.CRASHED,
                          message=f"containers of {self.pool.fn.name} cannot start: {START_FAILURES} in a row died "
                                  f"before they were ready; the last: {exit.cause}"
                                  + (f"\nlast output lines:\n{lines}" if lines else ""))
        log.warning("%s (no new container for %g s)", error.message, START_BLOCK_S)
        self.blocked = (time.monotonic() + START_BLOCK_S, error)
        self.queue.fail_waiting(error, [])

    def _start_blocked(self) -> bool:
        """Whether starts are blocked now; inputs waiting meanwhile fail at once with the reason."""
        if self.blocked is None:
            return False
        until, error = self.blocked
        if time.monotonic() >= until:
            self.blocked, self.failed_starts = None, START_FAILURES - 1  # one more try, then blocked again
            return False
        if self.queue.waiting and not self.pool.live():
            self.queue.fail_waiting(error, [])
        return True

    def _start_container(self) -> bool:
        pool, rt = self.pool, self.pool.rt
        spec = self._spec()
        if spec is None:
            return False
        cpu = spec.cpu
        if cpu and not rt.cpus.acquire(cpu):
            pool.waiting_reason = f"waiting for CPUs (cpu={cpu:g}; {rt.cpus.describe()})"
            rt.reclaim(pool, lambda c: c.cpus > 0)
            return False
        gpu = spec.gpu
        gpus: list[int] = []
        if gpu:
            got = rt.gpus.acquire(gpu)
            if got is None:
                rt.cpus.release(cpu)
                pool.waiting_reason = f"waiting for a GPU ({gpu})"
                rt.reclaim(pool, lambda c: bool(c.gpus))
                return False
            gpus = got
        pool.waiting_reason = "waiting for a container to start"
        container = rt.containers.start(ContainerSpec(spec.fid, spec.options, spec.env, spec.image,
                                                      tuple(gpus), cpu))
        log.info("starting container %s for %s%s", container.id, pool.fn.name, f" on GPUs {gpus}" if gpus else "")
        pool.containers[container.id] = container
        return True

    def _spec(self) -> ContainerSpec | None:
        """What a container of this function gets (thread pools sized to ``cpu=``; the user's own settings win),
        GPUs not yet reserved; None until its image is built."""
        fn = self.pool.fn
        cpu = fn.opts.cpu or 0.0
        env = {**thread_env(cpu), **fn.env} if cpu else dict(fn.env)
        image = self.pool.rt.images.start(fn.opts.image) if fn.opts.image else None
        if isinstance(image, Build):
            self._wait_for_image(image)
            return None
        self.pool.building = None
        return ContainerSpec(fn.fid, fn.opts, env, image, (), cpu)

    def _wait_for_image(self, build: Build) -> None:
        pool = self.pool
        if build.error is None:
            pool.building = build  # read live by queue_reason: a step may start and end between two ticks
            pool.waiting_reason = build.progress()
            return
        why = f"the image of {pool.fn.name} could not be built: {build.error}"
        self.queue.fail_waiting(ErrorInfo(type=ErrorName.IMAGE_BUILD, message=why), [])

    def scale_down(self, now: float) -> None:
        """Stop containers idle for ``scaledown_window``, keeping ``min_containers`` (+ buffer while busy)."""
        pool = self.pool
        busy = bool(self.queue.waiting) or any(c.state is State.BUSY for c in pool.containers.values())
        keep = 0 if pool.retired else self.min_containers + (self.buffer_containers if busy else 0)
        window_s = pool.fn.opts.scaledown_window_s
        live = pool.live()
        idle = sorted((c for c in live if c.state is State.IDLE), key=lambda c: c.idle_since)
        for c in idle[:max(0, len(live) - keep)]:
            if pool.retired or (now - c.idle_since >= window_s and c.holding_until <= now):  # (frames held: kept)
                self.retire(c)

    def retire(self, c: ContainerRecord) -> None:
        """Ask an idle container to stop: it runs its @exit hooks and leaves; forced if it takes too long.

        A leased one is asked for its lease back first (its leaseholder's call may be running):
        once released it is idle as any other, and retired on a later tick.
        """
        if c.lease is not None:
            self.leases.revoke(c)
            return
        self.pool.rt.send_container(c.id, encode(StopMsg()))
        self.pool.rt.containers.stop(c, None, EXIT_GRACE_S, asked=True)

    def idle_holder(self, holds: Callable[[ContainerRecord], bool]) -> ContainerRecord | None:
        """An idle container holding what ``holds`` looks for (GPUs, CPUs) that this pool can give up."""
        live = self.pool.live()
        if len(live) <= (0 if self.pool.retired else self.min_containers):
            return None
        return next((c for c in live if c.state is State.IDLE and holds(c)), None)

    def check_startup(self, now: float) -> None:
        """Stop containers not ready ``startup_timeout`` after their start (image, imports, ``@enter``)."""
        limit_s = self.pool.fn.opts.startup_timeout_s
        if limit_s is None:
            return
        for c in self.pool.live():
            if c.state is State.STARTING and now - c.started_at > limit_s:
                self.pool.rt.containers.stop(c, f"it did not start within startup_timeout={limit_s:g} s", grace_s=1.0)

    def check_memory(self) -> None:
        """Stop containers over ``memory=`` (on hosts whose cgroups cannot enforce it); their inputs count as lost
        containers."""
        limit = self.pool.fn.opts.memory_cap_mib
        if not limit:
            return
        for c in self.pool.live():
            rss = self.pool.rt.containers.memory_mib(c)
            if rss is not None and rss > limit:
                reason = f"it ran out of memory: {rss:.0f} MiB resident, over its limit of memory={limit} MiB"
                self.pool.rt.containers.stop(c, reason, grace_s=1.0)
