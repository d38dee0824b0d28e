"""The daemon's records of its containers, and their start and stop through a ``Backend``.

A ``ContainerRecord`` is what the daemon and the pools know of one container: its
state, the inputs running on it, its lease, the resources reserved for it, why the
runtime stopped it.  Where and how it runs is its backend's business
(``backends/``): ``ContainerManager`` is the one place that calls the backend.

Invariants: a record is in ``ContainerManager.containers`` from ``start`` until its
backend reports its exit, then its state is DEAD, its ``exit`` says how it ended,
and ``on_exit`` is called once; ``stop_reason`` (set by the runtime when it stops a
container) wins over the backend's cause in the sentence that reports a death.
"""

from __future__ import annotations

import collections
import enum
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .backends.base import Backend, ContainerExit, ContainerSpec
from .protocol.options import FunctionOptions

_ids = itertools.count(1)


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


@dataclass
class ContainerLease:
    """A container lent to one blocking caller: its calls go straight to the container's own socket."""

    peer: Any  # the caller's (listener, identity), where lease news goes
    sid: str
    token: str  # direct calls carry it: the container takes calls from this leaseholder only
    fid: str  # the fid its holder calls: the pool's, or one its app's redeploy superseded
    revoking: bool = False  # asked back; the container answers ``released`` when it is free


@dataclass
class ContainerRecord:
    """The daemon's record of one container of one function."""

    id: str
    fid: str
    max_inputs: int
    gpus: list[int]
    cpus: float = 0.0  # reserved from the host's CPU budget while it lives
    state: State = State.STARTING
    # input ids (and batch slots) on it, in the order they were sent: the first ``max_inputs`` run, the rest wait
    active: dict[str, None] = field(default_factory=dict)
    isolated: bool = False  # it runs a suspect input alone (see ``pools.queue``): it takes nothing else
    started_at: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None  # set when the runtime itself stops it (timeout, memory, ...)
    ready: bool = False  # it said hello and loaded its function
    uses_left: int | None = None  # single_use_containers: inputs it may still be given (None: no end)
    direct: str | None = None  # its own socket, for a leaseholder's calls (None: it takes no lease)
    lease: ContainerLease | None = None
    holding_until: float = 0.0  # monotonic: it holds a failed input's frames for a post-mortem until then
    exit: ContainerExit | None = None  # how it ended, once its backend said so

    def death_cause(self) -> str:
        """A sentence saying why this container ended, with its last lines of output."""
        exit = self.exit or ContainerExit("it vanished")
        cause = self.stop_reason or exit.cause
        lines = "\n".join(exit.tail[-10:])
        return f"container {self.id} died under the call: {cause}" + (
            f"\nlast output lines:\n{lines}" if lines else ""
        )


class ContainerManager:
    """Starts containers through its backend, keeps their records, reports their exits to ``on_exit``."""

    def __init__(self, backend: Backend, on_exit: Callable[[ContainerRecord], None]) -> None:
        self.backend = backend
        self.on_exit = on_exit
        self.containers: dict[str, ContainerRecord] = {}

    def check(self, options: FunctionOptions) -> None:
        """Raise ``SpecRefused`` when the backend could never start a container for these options."""
        self.backend.check(ContainerSpec.wanted(options))

    def start(self, spec: ContainerSpec) -> ContainerRecord:
        """A container in state STARTING; it comes up in the background and says hello when it is up."""
        spec = replace(spec, cid=f"c{next(_ids)}-{os.getpid()}", connect=self.backend.connect_back.connect)
        opts = spec.options
        record = ContainerRecord(spec.cid, spec.fid, spec.max_inputs, list(spec.gpus), spec.cpu,
                                 uses_left=1 if opts.single_use_containers else opts.container_max_inputs)
        self.containers[spec.cid] = record
        self.backend.start(spec, self._exited)
        return record

    def _exited(self, cid: str, exit: ContainerExit) -> None:
        record = self.containers.pop(cid, None)
        if record is None:
            return
        record.state = State.DEAD
        record.exit = exit
        self.on_exit(record)

    def stop(self, container: ContainerRecord, reason: str | None, grace_s: float, interrupt: bool = False,
             asked: bool = False) -> None:
        """Stop it (``reason``: why the runtime did, for its death report); forced ``grace_s`` later.

        ``interrupt``: let the user code running there unwind first; ``asked``: it was told to stop
        by message (it runs its @exit hooks), so nothing more happens before the force.
        """
        if container.state is State.DEAD:
            return
        container.state = State.STOPPING
        container.stop_reason = container.stop_reason or reason
        self.backend.stop(container.id, grace_s, interrupt=interrupt, asked=asked)

    def kill(self, container: ContainerRecord) -> None:
        self.backend.kill(container.id)

    def cancel(self, container: ContainerRecord, input_id: str) -> None:
        """Interrupt ``input_id`` if it is the one running; the container skips it if it is still queued."""
        self.backend.interrupt(container.id, input_id)

    def load_env(self, container: ContainerRecord) -> dict[str, str]:
        """What its ``load`` carries of its environment (the backend's say: {} for a local process)."""
        return self.backend.load_env(container.id)

    def memory_mib(self, container: ContainerRecord) -> float | None:
        return self.backend.memory_mib(container.id)

    def placement(self, container: ContainerRecord) -> str:
        return self.backend.placement(container.id)

    def all(self) -> list[ContainerRecord]:
        return list(self.containers.values())

    def stats(self) -> dict[str, Any]:
        counts = collections.Counter(c.state.value for c in self.containers.values())
        return dict(counts)
