"""``PoolState``: what every part of a pool shares, and the slot and timeout rules they all apply.

The parts (``queue.py``, ``batches.py``, ``leases.py``, ``scaling.py``) hold this state
and the lower parts they call, never the ``Pool`` (``pool.py``) that composes them: the
pool is a ``PoolState``, so they see it through this class alone.  This module imports
no part.

Invariants: ``inputs`` holds every input of the pool until its one result is sent;
``containers`` every container started for it until its exit; a ``retired`` pool takes
no new containers and lends none.
"""

from __future__ import annotations

import hashlib
import time

from ..containers import ContainerRecord, State
from ..images import Build
from ..protocol.errors import ErrorName
from .host import PoolHost
from .inputs import FunctionDef, Input, Result, error_result

STOP_GRACE_S = 5.0


class PoolState:
    def __init__(self, fn: FunctionDef, runtime: PoolHost) -> None:
        self.fn = fn
        self.rt = runtime
        self.inputs: dict[str, Input] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self.retired = False
        self.waiting_reason = ""
        self.answered = 0  # inputs answered since the pool started (the panel's inputs/s is its rate)
        self.building: Build | None = None  # the image build its next container waits for

    def live(self) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if c.state is not State.STOPPING]

    def free_container(self, prefetch: int) -> ContainerRecord | None:
        """The container with the most room for inputs (``room``), if any has some."""
        best, best_room = None, 0
        for c in self.containers.values():
            free = room(c, prefetch)
            if free > best_room:
                best, best_room = c, free
        return best

    def sticky_container(self, key: str) -> ContainerRecord | None:
        """The live container ``key`` hashes to: rendezvous hashing, so one that stops moves only its own keys."""
        live = [c for c in self.containers.values() if c.state in (State.IDLE, State.BUSY)]
        if not live:
            return None
        return max(live, key=lambda c: hashlib.blake2b(f"{key}\0{c.id}".encode(), digest_size=8).digest())

    def stop_timed_out(self, container: ContainerRecord) -> None:
        """Stop a container whose input (or batch) passed the function's timeout, interrupting it first."""
        self.rt.containers.stop(container, f"it passed its timeout of {self.fn.timeout_s:g} s", STOP_GRACE_S,
                                interrupt=True)

    def timeout_result(self, input_id: str, cid: str) -> Result:
        message = (f"{self.fn.name} ran past its timeout of {self.fn.timeout_s:g} s; "
                   f"container {cid} was stopped and will be replaced")
        return error_result(input_id, ErrorName.TIMEOUT, message)


def room(c: ContainerRecord, prefetch: int) -> int:
    """How many more inputs ``c`` may take: none unless it is idle or busy and not leased."""
    if c.state not in (State.IDLE, State.BUSY) or c.lease is not None or c.isolated:
        return 0
    if c.uses_left is not None:  # single use: no backlog, and nothing once its input was given
        return min(c.uses_left, max(0, c.max_inputs - len(c.active)))
    free = c.max_inputs + prefetch - len(c.active)
    if len(c.active) >= c.max_inputs and free < prefetch // 2:
        return 0  # its backlog is refilled in batches, not one input per message
    return free


def occupy(container: ContainerRecord, slot_id: str) -> None:
    """An input (or a batch: one slot) goes to ``container``."""
    container.active[slot_id] = None
    container.state = State.BUSY
    if container.uses_left is not None:
        container.uses_left -= 1


def spent(container: ContainerRecord) -> bool:
    """A single-use container whose one input is done: it is to stop."""
    return container.uses_left == 0 and not container.active


def release_slot(container: ContainerRecord, input_id: str) -> None:
    container.active.pop(input_id, None)
    if not container.active:
        container.isolated = False
    if container.state is State.BUSY and not container.active:
        container.state = State.IDLE
        container.idle_since = time.monotonic()
