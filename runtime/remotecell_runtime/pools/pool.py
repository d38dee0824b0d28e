"""``Pool``: one autoscaling pool of containers per function definition, the one object others hold.

The pool's work is split by concern, each part holding what the parts share
(``PoolState``, ``state.py``, which the pool is) and the lower parts it calls, never
the pool: ``InputQueue`` (``queue.py``, holding the ``BatchAssembly`` of ``batches.py``),
``Leases`` (``leases.py``, over the queue) and ``Scaler`` (``scaling.py``, over both).
The pool composes them, routes container events to them, and answers for the whole
(stats, why inputs wait).

Invariants: the pool never drops an input: each one ends with exactly one result sent
to its caller, be it the container's, a timeout, a crash or a cancellation; a retired
pool (superseded or stopped) takes no new containers and lends none, and its inputs
still finish.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from ..containers import ContainerRecord, State
from ..protocol import sharedmem
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.messages.calls import ResultEntry
from ..protocol.messages.session import ErrorInfo
from ..result_cache import cache_key
from .host import PoolHost
from .inputs import FunctionDef, Input, Result, error_result
from .leases import Leases
from .queue import InputQueue
from .scaling import Scaler
from .state import STOP_GRACE_S, PoolState, release_slot, spent

log = logging.getLogger("remotecell.runtime")


class Pool(PoolState):
    def __init__(self, fn: FunctionDef, runtime: PoolHost) -> None:
        super().__init__(fn, runtime)
        self.queue = InputQueue(self, self.dispatch)
        self.batches = self.queue.batches
        self.leases = Leases(self, self.queue)
        self.scaler = Scaler(self, self.queue, self.leases)

    # -- inputs -------------------------------------------------------------------------------

    def submit(self, *inputs: Input, soon: bool = False) -> None:
        """Take ``inputs`` and dispatch; ``soon``: they may wait a little to leave with a burst (spawned calls)."""
        queued = []
        for inp in inputs:
            self.inputs[inp.id] = inp
            if self.fn.opts.cache is not None and self._answered_from_cache(inp):
                continue
            if not self.batches.add(inp):
                queued.append(inp)
        if self.queue.enqueue(queued, soon):
            self.dispatch()

    def _answered_from_cache(self, inp: Input) -> bool:
        """A ``cache=True`` call: answered now when the cache has its result, else marked to fill it.

        Such calls never take a lease: a direct call would pass the cache by.
        """
        inp.lease = None
        if inp.gen or inp.web is not None:  # streams are not cached (the client refuses such definitions)
            return False
        key = cache_key(self.fn.opts, inp.method, inp.payload)
        if key is None:
            return False
        stored = self.rt.result_cache.get(key)
        if stored is None:
            inp.cache_key = key
            return False
        self.queue.finish(inp.id, Result(ResultEntry(id=inp.id, status="ok", cached=True), [stored]))
        return True

    @property
    def waiting(self) -> int:
        """Inputs not yet on a container: queued, or waiting for their batch."""
        return self.queue.waiting

    def dispatch(self) -> None:
        """Give waiting inputs (and due batches) to free slots, then start containers for what is left."""
        if self.batches.batchers:
            self.batches.dispatch()
        self.queue.dispatch()
        self.scaler.scale()
        if self.queue.pending and not any(c.state is State.STARTING for c in self.containers.values()):
            self.leases.take_one_back()

    def cancel(self, input_id: str) -> None:
        self.queue.cancel(input_id)

    def fail_waiting(self, error: ErrorInfo, payloads: list[Payload]) -> None:
        """Every input not yet on a container ends with ``error``."""
        self.queue.fail_waiting(error, payloads)

    # -- container events ---------------------------------------------------------------------

    def on_ready(self, container: ContainerRecord) -> None:
        container.state = State.IDLE
        container.ready = True
        container.idle_since = time.monotonic()
        self.scaler.started()
        self.dispatch()

    def on_load_failed(self, container: ContainerRecord, error: ErrorInfo, payloads: list[Payload]) -> None:
        """The body cannot load: every queued input gets that error, there is no point retrying.

        When the runtime stopped it as it loaded (``startup_timeout``), that is the error, not what the stop
        raised in the loading code."""
        if container.stop_reason is not None:
            why = f"container {container.id} of {self.fn.name} was stopped: {container.stop_reason}"
            error = ErrorInfo(type=ErrorName.CRASHED.value, message=why)
            payloads = []
        self.rt.containers.stop(container, "its function failed to load", STOP_GRACE_S)
        self.fail_waiting(error, payloads)

    def on_results(self, container: ContainerRecord, results: list[Result]) -> None:
        for result in results:
            self._on_result(container, result)
        if spent(container):
            self.scaler.retire(container)
        self.dispatch()

    def _on_result(self, container: ContainerRecord, result: Result) -> None:
        input_id = result.entry.id
        if result.entry.run_us:  # a result the runtime made has none
            self.queue.observe_run(result.entry.run_us)
        self.batches.answered(container, input_id)
        inp = self.inputs.get(input_id)
        if inp is None or inp.container is not container:  # cancelled or timed out meanwhile
            container.active.pop(f"cancelled:{input_id}", None)
            release_slot(container, input_id)
            sharedmem.discard(result.payloads)
        elif result.status == "error" and self.fn.retry_delay_s(inp.attempt) is not None:
            self.queue.fail(inp, result)
        else:
            self.leases.lend(container, inp)
            self.queue.finish(input_id, result)

    def on_exit(self, container: ContainerRecord) -> None:
        assert container.exit is not None
        log.info("container %s of %s exited (%s)", container.id, self.fn.name, container.exit.cause)
        self.containers.pop(container.id, None)
        self.rt.gpus.release(container.gpus)
        self.rt.cpus.release(container.cpus)
        cause = container.death_cause()
        self.batches.container_lost(container, cause)
        self.queue.container_lost(container, cause)
        if container.stop_reason is None and not container.exit.clean:
            log.warning("%s", cause)
        if not container.ready and container.stop_reason is None:
            self.scaler.start_failed(container.exit)
        self.dispatch()

    # -- leases -------------------------------------------------------------------------------

    def supersede(self) -> None:
        """A newer definition replaces this one: no new inputs, and leases end (their next calls go to the new one)."""
        self.retired = True
        self.leases.revoke_all()

    def revoke(self, container: ContainerRecord, grace_s: float | None = None) -> None:
        self.leases.revoke(container, grace_s)

    def on_released(self, container: ContainerRecord, idle_s: float, last_id: str) -> None:
        self.leases.on_released(container, idle_s, last_id)
        self.dispatch()

    def adopt(self, inp: Input, why: str, cid: str, cause: str = "", error: ErrorInfo | None = None) -> None:
        """An input handed back by its caller from a leased container (see ``Leases.adopt``)."""
        self.leases.adopt(inp, why, cid, cause, error)
        self.dispatch()

    # -- scaling ------------------------------------------------------------------------------

    def scale(self) -> None:
        self.scaler.scale()

    def stop(self, reason: str) -> None:
        """The app is gone: fail what waits, stop every container."""
        self.retired = True
        for inp in list(self.inputs.values()):
            self.queue.finish(inp.id, error_result(inp.id, ErrorName.CANCELLED, reason))
        for c in list(self.containers.values()):
            self.rt.containers.stop(c, reason, STOP_GRACE_S)

    # -- what it reports ----------------------------------------------------------------------

    def queue_reason(self) -> str:
        """Why queued inputs wait: for a GPU, for containers to start, or for a busy one to be free."""
        if self.building is not None and self.waiting_reason.startswith("building its image"):
            return self.building.progress()
        if self.waiting_reason.startswith(("waiting for a GPU", "waiting for CPUs", "building its image")):
            return self.waiting_reason
        starting = sum(1 for c in self.containers.values() if c.state is State.STARTING)
        if starting:
            return f"waiting for a container to start ({starting} starting)"
        return f"waiting for a free container ({len(self.live())} running, max_containers={self.scaler.max_containers})"

    def _waiting_reason(self) -> str:
        if self.queue.pending or self.queue.held or self.batches.any_due():
            return self.queue_reason()
        return "waiting for its batch to fill (max_batch_size) or its oldest input's wait_ms"

    @property
    def empty(self) -> bool:
        return not self.inputs and not self.containers

    def stats(self) -> dict[str, Any]:
        states = collections.Counter(c.state.value for c in self.containers.values())
        waiting = self.waiting
        out = {
            "function": self.fn.name,
            "fid": self.fn.fid,
            "containers": dict(states),
            "queued": waiting,
            "running": len(self.inputs) - waiting,
            "leased": sum(1 for c in self.containers.values() if c.lease is not None),
            # inputs the live containers could take on now (Modal's FunctionStats.input_headroom)
            "headroom": sum(max(c.max_inputs - len(c.active), 0) for c in self.containers.values()
                            if c.state in (State.IDLE, State.BUSY) and c.lease is None),
            "waiting_reason": self._waiting_reason() if waiting else "",
            # where each runs, as its backend says: "pid 4242 on this host in a sandbox"
            "placements": {cid: self.rt.containers.placement(c) for cid, c in self.containers.items()},
            "container_states": {cid: c.state.value for cid, c in self.containers.items()},
            "answered": self.answered,  # a counter since the pool started: the panel charts its rate
        }
        if self.batches.batchers:
            out["batching"] = self.batches.stats()
        return out
