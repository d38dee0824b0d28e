"""One autoscaling pool of containers per function, and the dispatch of its inputs.

Inputs wait in the pool's queue until a container has a free slot; a container
starts when an input finds none (up to ``max_containers``).  The pool never
drops an input: each one ends with exactly one result sent to its caller, be it
the container's, a timeout, a crash or a cancellation.

A fast function (its inputs run in well under ``PREFETCH_BUDGET_US``) gets
inputs sent ahead: a container holds a few more than it runs, so it never
waits for the daemon between two inputs, and inputs travel many to a message.

A blocking caller on this host may be lent an idle container (a lease, asked
for with the call's ``lease`` flag): its next calls go straight to the
container, and the pool only hears how they went.  The pool takes the lease
back when other inputs wait and no container is starting for them; an input
that timed out, crashed its container or needs a retry under a lease is
handed back by its caller (``adopt``) and goes on as any other input.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .batching import Batch, Batcher
from .containers import Container, ContainerManager, Lease, State
from .cpus import CpuBudget, thread_env
from .gpus import GpuAllocator
from .images import Build, Images
from .protocol import framing, sharedmem
from .protocol.errors import ErrorName
from .protocol.framing import Frame, Payload

log = logging.getLogger("remotecell.runtime")

CANCEL_GRACE_S = 5.0
STOP_GRACE_S = 5.0
CRASH_RETRY_CAP = 3  # containers lost under one input before it fails as poison
EXIT_GRACE_S = 30.0  # what @exit hooks get at scale-down
PREFETCH_BUDGET_US = 2000  # how much queued work a container may hold beyond its running inputs
PREFETCH_MAX = 256
STARTUP_S = 0.5  # about what a new container costs before it helps: less queued work than this, don't start one
Peer = tuple[Any, bytes]  # (socket, identity): where a caller's replies go


class Runtime(Protocol):
    containers: ContainerManager
    gpus: GpuAllocator
    cpus: CpuBudget
    images: Images

    def send_container(self, cid: str, frames: list[Frame]) -> None: ...
    def reclaim(self, requester: Pool, holds: Callable[[Container], bool]) -> None: ...
    def send_peer(self, peer: Peer, frames: list[Frame]) -> None: ...
    def send_result(self, peer: Peer, result: Result) -> None: ...
    def input_done(self, input_id: str) -> None: ...


@dataclass
class FunctionDef:
    fid: str
    app_id: str
    name: str
    options: dict[str, Any]
    body: Payload
    key: str = ""  # the same definition from the same client and app, across runtime restarts
    env: dict[str, str] = field(default_factory=dict)  # its containers' variables: env= and its secrets
    meta: dict[str, Any] = field(default_factory=dict)  # what its client said of it: generators, methods

    @property
    def timeout_s(self) -> float:
        return float(self.options.get("timeout_s", 300))

    @property
    def max_inputs(self) -> int:
        return int(self.options.get("max_inputs", 1))

    @property
    def target_inputs(self) -> int:
        return int(self.options.get("target_inputs", self.max_inputs))

    def retry_delay_s(self, attempt: int) -> float | None:
        """Seconds before the next try after failed ``attempt``, or None when the budget is spent."""
        retries = self.options.get("retries") or {}
        if attempt > int(retries.get("max_retries", 0)):
            return None
        delay = float(retries.get("initial_delay_s", 1.0)) * float(retries.get("backoff_coefficient", 2.0)) ** (
            attempt - 1)
        return min(delay, float(retries.get("max_delay_s", 60.0)))


@dataclass
class Input:
    id: str
    peer: Peer
    payload: Payload
    frames: list[Frame] | None = None  # the caller's one-call message, forwarded as it came when sent alone
    method: str | None = None
    shm: bool = False  # the caller takes large results through shared memory
    queued_at: float = field(default_factory=time.monotonic)
    container: Container | None = None
    deadline: float = 0.0  # event-loop time at which this attempt times out
    attempt: int = 1  # user errors and timeouts count; container losses do not
    crashes: int = 0
    lease: str | None = None  # the caller's session, when it would take a lease of the container
    called_as: str | None = None  # the superseded fid its caller holds (a redeployed app), when not ours

    def entry(self) -> framing.Entry:
        """This input as one entry of a ``calls`` message."""
        head: dict[str, Any] = {"id": self.id, "shm": self.shm}
        if self.method is not None:
            head["m"] = self.method
        return head, [self.payload]


class ResultMessage:
    """A container's ``results`` message: sent on whole when all of it goes to one caller, split only if needed."""

    def __init__(self, header: dict[str, Any], frames: list[Frame]) -> None:
        self.header = header
        self.frames = frames
        self.entries: list[dict[str, Any]] = header.get("e")  # type: ignore[assignment]
        metas = header.get("p") or []
        if not isinstance(self.entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("id"), str) and isinstance(e.get("np", 1), int)
                for e in self.entries) or sum(e.get("np", 1) for e in self.entries) != len(metas):
            raise framing.WireError("a results message whose entries do not match its payloads")
        self._split: list[list[Payload]] | None = None

    def payloads(self, index: int) -> list[Payload]:
        if self._split is None:
            payloads = framing.split_payloads(self.header, self.frames[2:])
            self._split = [own for _, own in framing.split_many(self.header, payloads)]
        return self._split[index]

    def results(self) -> list[Result]:
        return [Result(entry, source=self, index=i) for i, entry in enumerate(self.entries)]


class Result:
    """How one input ended: its result header (id, status, error) and payloads."""

    __slots__ = ("header", "_payloads", "frames", "source", "index")

    def __init__(self, header: dict[str, Any], payloads: list[Payload] | None = None,
                 frames: list[Frame] | None = None, source: ResultMessage | None = None, index: int = 0) -> None:
        self.header = header
        self._payloads = payloads
        self.frames = frames  # the container's own one-result message: forwarded untouched
        self.source = source  # or the many-results message it came in
        self.index = index

    @property
    def payloads(self) -> list[Payload]:
        if self._payloads is None:
            self._payloads = self.source.payloads(self.index) if self.source is not None else []
        return self._payloads

    @property
    def status(self) -> str:
        return str(self.header.get("status"))


def error_result(input_id: str, type_name: str, message: str) -> Result:
    """A result made by the runtime itself: the error travels by name, nothing pickled."""
    error = {"type": type_name, "message": message, "traceback": ""}
    return Result({"id": input_id, "status": "error", "error": error})


def cancelled_result(input_id: str) -> Result:
    return Result({"id": input_id, "status": "cancelled"})


class Pool:
    def __init__(self, fn: FunctionDef, runtime: Runtime) -> None:
        self.fn = fn
        self.rt = runtime
        self.queue: collections.deque[Input] = collections.deque()
        self.inputs: dict[str, Input] = {}
        self.containers: dict[str, Container] = {}
        self.retired = False
        self.waiting_reason = ""
        self.run_us: float | None = None  # moving average of how long one input runs
        # Inputs on containers in the order they were sent: every attempt has the same timeout,
        # so the first one has the earliest deadline and one timer watches them all.
        self.running: dict[str, Input] = {}
        self._deadline_timer: asyncio.TimerHandle | None = None
        # @rc.batched functions (or methods): their inputs wait in a Batcher instead of the queue.
        self.batchers: dict[str, Batcher[Input]] = {
            method: Batcher(method, int(spec["max_batch_size"]), int(spec["wait_ms"]), self.dispatch)
            for method, spec in (fn.options.get("batched") or {}).items()
        }
        self.batch_of: dict[str, Batch[Input]] = {}  # input id -> its running batch (until its result is in)

    # -- inputs -------------------------------------------------------------------------------

    def submit(self, *inputs: Input) -> None:
        for inp in inputs:
            self.inputs[inp.id] = inp
            batcher = self.batchers.get(inp.method or "") if self.batchers else None
            if batcher is not None:
                batcher.add(inp)
                continue
            self.queue.append(inp)
        self.dispatch()

    @property
    def waiting(self) -> int:
        """Inputs not yet on a container: queued, or waiting for their batch."""
        return len(self.queue) + sum(len(b) for b in self.batchers.values())

    @property
    def prefetch(self) -> int:
        """Inputs a container may hold beyond ``max_inputs``: none until the function is known to be fast."""
        if self.run_us is None or self.run_us >= PREFETCH_BUDGET_US:
            return 0
        return min(PREFETCH_MAX, int(PREFETCH_BUDGET_US / max(self.run_us, 1.0)))

    def _room(self, c: Container, prefetch: int) -> int:
        if c.state not in (State.IDLE, State.BUSY) or c.lease is not None:
            return 0
        room = c.max_inputs + prefetch - len(c.active)
        if len(c.active) >= c.max_inputs and room < prefetch // 2:
            return 0  # its backlog is refilled in batches, not one input per message
        return room

    def dispatch(self) -> None:
        """Give queued inputs to free slots (many to a message), then start containers for what is left."""
        if self.batchers:
            self._dispatch_batches()
        prefetch = self.prefetch
        sent: dict[str, list[Input]] = {}
        while self.queue:
            container = self._free_container(prefetch)
            if container is None:
                break
            # Slow functions spread one input at a time over the freest containers; fast ones fill a backlog.
            n = min(self._room(container, prefetch), len(self.queue)) if prefetch else 1
            for _ in range(n):
                inp = self.queue.popleft()
                self._run(inp, container)
                sent.setdefault(container.id, []).append(inp)
        for cid, inputs in sent.items():
            frames = inputs[0].frames if len(inputs) == 1 else None
            self.rt.send_container(cid, frames or framing.encode_many("calls", [inp.entry() for inp in inputs]))
        self.scale()
        if self.queue and not any(c.state is State.STARTING for c in self.containers.values()):
            self._take_a_lease_back()

    def _free_container(self, prefetch: int) -> Container | None:
        best, best_room = None, 0
        for c in self.containers.values():
            room = self._room(c, prefetch)
            if room > best_room:
                best, best_room = c, room
        return best

    def _dispatch_batches(self) -> None:
        for batcher in self.batchers.values():
            while batcher.due():
                container = self._free_container(0)  # a batch takes one slot; batches are not prefetched
                if container is None:
                    return
                batch = batcher.take()
                assert batch is not None
                self._run_batch(batch, container)

    def _run_batch(self, batch: Batch[Input], container: Container) -> None:
        """One message to the container: the inputs' payloads as they came, to be called once with lists."""
        batch.container = container
        container.active.add(batch.id)  # a batch takes one slot
        container.state = State.BUSY
        header: dict[str, Any] = {"t": "batch", "id": batch.id, "ids": [inp.id for inp in batch.items],
                                  "shm": [inp.shm for inp in batch.items]}
        if batch.method:
            header["m"] = batch.method
        for inp in batch.items:
            inp.container = container
            self.batch_of[inp.id] = batch
        self.rt.send_container(container.id, framing.encode(header, [inp.payload for inp in batch.items]))
        # The timeout covers one attempt of the whole batch.
        batch.timer = asyncio.get_running_loop().call_later(self.fn.timeout_s, self._batch_timed_out, batch)

    def _batch_done(self, batch: Batch[Input], input_id: str) -> None:
        """The container answered for ``input_id``; the batch's slot frees when it answered for all."""
        self.batch_of.pop(input_id, None)
        batch.outstanding.discard(input_id)
        if batch.outstanding:
            return
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.container is not None:
            self._release_slot(batch.container, batch.id)

    def _abandon_batch(self, batch: Batch[Input], result_for: Callable[[str], Result],
                       lost_container: bool = False) -> None:
        """The batch's attempt ended without its results (timeout, crash): each live input fails."""
        for input_id in list(batch.outstanding):
            self._batch_done(batch, input_id)
            inp = self.inputs.get(input_id)
            if inp is not None and inp.container is batch.container:
                self.fail(inp, result_for(input_id), lost_container=lost_container)

    def _batch_timed_out(self, batch: Batch[Input]) -> None:
        container = batch.container
        batch.timer = None
        msg = (f"a batch of {len(batch.items)} inputs of {self.fn.name} ran past its timeout of "
               f"{self.fn.timeout_s:g} s; container {container.id} was stopped and will be replaced")
        self.rt.containers.stop(container, f"it passed its timeout of {self.fn.timeout_s:g} s", STOP_GRACE_S,
                                interrupt=True)
        self._abandon_batch(batch, lambda input_id: error_result(input_id, ErrorName.TIMEOUT, msg))
        self.dispatch()

    def _run(self, inp: Input, container: Container) -> None:
        inp.container = container
        container.active.add(inp.id)
        container.state = State.BUSY
        loop = asyncio.get_running_loop()
        inp.deadline = loop.time() + self.fn.timeout_s
        self.running[inp.id] = inp
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(inp.deadline, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._deadline_timer = None
        loop = asyncio.get_running_loop()
        for inp in list(self.running.values()):
            if self.running.get(inp.id) is not inp:  # ended meanwhile
                continue
            if inp.deadline > loop.time():
                self._deadline_timer = loop.call_at(inp.deadline, self._check_deadlines)
                return
            self._timed_out(inp)

    def finish(self, input_id: str, result: Result) -> None:
        """Send the one result of ``input_id`` to its caller and forget the input."""
        inp = self.inputs.pop(input_id, None)
        if inp is None:
            return
        self._detach(inp)
        if result.status != "ok":  # a container that succeeded owns the input's shared memory now
            sharedmem.discard([inp.payload])
        if inp.attempt > 1:
            result.header["attempt"] = inp.attempt
        self.rt.send_result(inp.peer, result)
        self.rt.input_done(input_id)

    def _detach(self, inp: Input) -> None:
        """Take ``inp`` off its container (or out of the queue)."""
        self.running.pop(inp.id, None)
        if inp.container is not None:
            self._release_slot(inp.container, inp.id)  # a batched input's slot is its batch's: no-op
            inp.container = None
        elif self.batchers and (inp.method or "") in self.batchers:
            self.batchers[inp.method or ""].remove(inp)
        elif inp in self.queue:
            self.queue.remove(inp)

    def fail(self, inp: Input, result: Result, lost_container: bool = False) -> None:
        """An attempt failed: try again per the function's retries, else send ``result``."""
        self._detach(inp)
        if lost_container:
            inp.crashes += 1
            # A %%remote session must not rerun a cell on a fresh container: it sets crash_retries=0.
            cap = int(self.fn.options.get("crash_retries", CRASH_RETRY_CAP))
            if inp.crashes <= cap:
                self._retry(inp, 0.0)
                return
            if cap:
                result.header["error"]["message"] += (
                    f"\nthe input failed as poison: {inp.crashes} containers died under it")
                result.frames = None
        else:
            delay_s = self.fn.retry_delay_s(inp.attempt)
            if delay_s is not None:
                inp.attempt += 1
                sharedmem.discard(result.payloads)
                self._retry(inp, delay_s)
                return
        self.finish(inp.id, result)

    def _retry(self, inp: Input, delay_s: float) -> None:
        log.info("retrying input %s of %s in %.3g s (attempt %d)", inp.id, self.fn.name, delay_s, inp.attempt)
        asyncio.get_running_loop().call_later(delay_s, self._requeue, inp)

    def _requeue(self, inp: Input) -> None:
        if self.inputs.get(inp.id) is inp:  # not cancelled meanwhile
            if (inp.method or "") in self.batchers:  # it joins the next batch (retries are per input)
                self.batchers[inp.method or ""].add(inp, front=True)
            else:
                self.queue.appendleft(inp)
            self.dispatch()

    def _release_slot(self, container: Container, input_id: str) -> None:
        container.active.discard(input_id)
        if container.state is State.BUSY and not container.active:
            container.state = State.IDLE
            container.idle_since = time.monotonic()

    def cancel(self, input_id: str) -> None:
        inp = self.inputs.get(input_id)
        if inp is None:
            return
        container = inp.container
        if input_id in self.batch_of:
            container = None  # its batch runs on for the others; its result will be dropped
        if container is not None:
            # The container is told; it frees the slot when it reports back, or is stopped.
            if container.max_inputs == 1:  # the input may run on its I/O thread: interrupt it
                self.rt.containers.cancel(container, input_id)
            else:
                self.rt.send_container(container.id, framing.encode({"t": "cancel", "id": input_id}))
            loop = asyncio.get_running_loop()
            loop.call_later(CANCEL_GRACE_S, self._force_stop, container, input_id)
            container.active.add(f"cancelled:{input_id}")
        self.finish(input_id, cancelled_result(input_id))
        self.dispatch()

    def _force_stop(self, container: Container, input_id: str) -> None:
        if f"cancelled:{input_id}" in container.active:
            reason = f"it was stopped because input {input_id} ignored cancellation for {CANCEL_GRACE_S:g} s"
            self.rt.containers.stop(container, reason, STOP_GRACE_S)

    def _timed_out(self, inp: Input) -> None:
        container = inp.container
        assert container is not None
        self.rt.containers.stop(container, f"it passed its timeout of {self.fn.timeout_s:g} s", STOP_GRACE_S,
                                interrupt=True)
        self.fail(inp, error_result(inp.id, ErrorName.TIMEOUT, self._timeout_message(container.id)))
        self.dispatch()

    # -- container events ---------------------------------------------------------------------

    def on_ready(self, container: Container) -> None:
        container.state = State.IDLE
        container.idle_since = time.monotonic()
        self.dispatch()

    def on_load_failed(self, container: Container, error: dict[str, Any], frames: list[Frame]) -> None:
        """The body cannot load: every queued input gets that error, there is no point retrying."""
        self.rt.containers.stop(container, "its function failed to load", STOP_GRACE_S)
        self._fail_waiting(error, framing.decode(frames)[1])

    def _fail_waiting(self, error: dict[str, Any], payloads: list[Payload]) -> None:
        """Every input not yet on a container ends with ``error``."""
        waiting = list(self.queue) + [inp for b in self.batchers.values() for inp in b.drain()]
        for inp in waiting:
            self.finish(inp.id, Result({"id": inp.id, "status": "error", "error": error}, payloads))

    # -- leases -------------------------------------------------------------------------------

    def _lend(self, container: Container, inp: Input) -> None:
        """Lend ``container`` to the caller of ``inp`` (whose result is next) if nothing else wants it.

        Only a container that runs one input at a time has a ``direct`` socket.
        """
        if inp.lease is None or container.direct is None or container.state is not State.BUSY:
            return
        if container.active != {inp.id} or self.queue or self.batchers or self.retired:
            return
        container.lease = Lease(inp.peer, inp.lease, secrets.token_hex(8), inp.called_as or self.fn.fid)
        container.idle_since = time.monotonic()
        self.rt.send_container(container.id, framing.encode({"t": "lease", "token": container.lease.token}))
        retries = int((self.fn.options.get("retries") or {}).get("max_retries", 0)) > 0
        grant = {"t": "lease", "id": inp.id, "fid": container.lease.fid, "cid": container.id, "addr": container.direct,
                 "token": container.lease.token, "timeout_s": self.fn.timeout_s, "retries": retries}
        self.rt.send_peer(inp.peer, framing.encode(grant))  # before the result: the caller's next call uses it

    def _take_a_lease_back(self) -> None:
        leased = [c for c in self.live() if c.lease is not None and not c.lease.revoking]
        if leased:
            self.revoke(leased[0])

    def supersede(self) -> None:
        """A newer definition replaces this one: no new inputs, and leases end (their next calls go to the new one)."""
        self.retired = True
        for c in self.live():
            if c.lease is not None:
                self.revoke(c)

    def revoke(self, container: Container, grace_s: float | None = None) -> None:
        """Ask for the lease back; stop the container if it is not free ``grace_s`` later."""
        lease = container.lease
        if lease is None or lease.revoking:
            return
        lease.revoking = True
        self.rt.send_container(container.id, framing.encode({"t": "revoke"}))
        if grace_s is not None:
            def stop_if_still_held() -> None:
                if container.lease is lease:
                    reason = f"its leaseholder's call ignored cancellation for {grace_s:g} s"
                    self.rt.containers.stop(container, reason, STOP_GRACE_S)

            asyncio.get_running_loop().call_later(grace_s, stop_if_still_held)

    def on_released(self, container: Container, idle_s: float, last_id: str) -> None:
        """The container gave the lease up after its holder's call ``last_id``, and takes no more."""
        if container.lease is not None:  # the holder's next call goes through the runtime at once
            ended = {"t": "lease_ended", "fid": container.lease.fid, "cid": container.id, "last": last_id}
            self.rt.send_peer(container.lease.peer, framing.encode(ended))
        container.lease = None
        container.idle_since = time.monotonic() - max(idle_s, 0.0)  # idle since the leaseholder's last call
        self.dispatch()

    def on_lease_used(self, container: Container, runs: int, run_us: int) -> None:
        """How the leaseholder's calls went: they count as use (scale-down) and as run time."""
        container.idle_since = time.monotonic()
        if runs > 0:
            mean_us = run_us / runs
            self.run_us = mean_us if self.run_us is None else 0.8 * self.run_us + 0.2 * mean_us

    def adopt(self, inp: Input, why: str, cid: str, cause: str = "", error: dict[str, Any] | None = None) -> None:
        """An input that ended badly on leased container ``cid``, handed back by its caller: it goes on here.

        ``why``: "timeout" (the caller waited past the timeout: the container is stopped),
        "crash" (the container died under it, ``cause`` says why) or "error" (it raised
        ``error`` and the function has retries).
        """
        self.inputs[inp.id] = inp
        if why == "timeout":
            container = self.containers.get(cid)
            if container is not None and container.lease is not None and container.lease.peer == inp.peer:
                self.rt.containers.stop(container, f"it passed its timeout of {self.fn.timeout_s:g} s",
                                        STOP_GRACE_S, interrupt=True)
            self.fail(inp, error_result(inp.id, ErrorName.TIMEOUT, self._timeout_message(cid)))
        elif why == "crash":
            self.fail(inp, error_result(inp.id, ErrorName.CRASHED, cause), lost_container=True)
        else:
            self.fail(inp, Result({"id": inp.id, "status": "error", "error": error or {}}))
        self.dispatch()

    def _timeout_message(self, cid: str) -> str:
        return (f"{self.fn.name} ran past its timeout of {self.fn.timeout_s:g} s; "
                f"container {cid} was stopped and will be replaced")

    def on_results(self, container: Container, results: list[Result]) -> None:
        for result in results:
            self._on_result(container, result)
        self.dispatch()

    def _on_result(self, container: Container, result: Result) -> None:
        input_id = str(result.header.get("id"))
        run_us = result.header.get("us")
        if isinstance(run_us, int):
            self.run_us = run_us if self.run_us is None else 0.8 * self.run_us + 0.2 * run_us
        batch = self.batch_of.get(input_id) if self.batch_of else None
        if batch is not None and batch.container is container:
            self._batch_done(batch, input_id)
        inp = self.inputs.get(input_id)
        if inp is None or inp.container is not container:  # cancelled or timed out meanwhile
            container.active.discard(f"cancelled:{input_id}")
            self._release_slot(container, input_id)
            sharedmem.discard(result.payloads)
        elif result.status == "error" and self.fn.retry_delay_s(inp.attempt) is not None:
            self.fail(inp, result)
        else:
            self._lend(container, inp)
            self.finish(input_id, result)

    def on_exit(self, container: Container, returncode: int | None) -> None:
        log.info("container %s of %s exited (%s)", container.id, self.fn.name, returncode)
        self.containers.pop(container.id, None)
        self.rt.gpus.release(container.gpus)
        self.rt.cpus.release(container.cpus)
        cause = container.death_cause(returncode)
        for batch in {b for b in self.batch_of.values() if b.container is container}:
            self._abandon_batch(batch, lambda input_id: error_result(input_id, ErrorName.CRASHED, cause),
                                lost_container=True)
        for input_id in list(container.active):
            inp = self.inputs.get(input_id)
            if inp is not None and inp.container is container:
                self.fail(inp, error_result(input_id, ErrorName.CRASHED, cause), lost_container=True)
        if container.stop_reason is None and returncode != 0:
            log.warning("%s", cause)
        self.dispatch()

    # -- scaling ------------------------------------------------------------------------------

    @property
    def min_containers(self) -> int:
        return int(self.fn.options.get("min_containers", 0))

    @property
    def buffer_containers(self) -> int:
        return int(self.fn.options.get("buffer_containers", 0))

    def live(self) -> list[Container]:
        return [c for c in self.containers.values() if c.state is not State.STOPPING]

    def scale(self) -> None:
        """Start containers so that each holds about ``target_inputs`` of the demand."""
        if self.retired:
            return
        simple = self.fn.target_inputs == self.fn.max_inputs and not self.buffer_containers
        if simple and not self.waiting and len(self.containers) >= self.min_containers:
            return  # the hot path: nothing waits, nothing to add
        live = self.live()
        if len(live) >= int(self.fn.options.get("max_containers", 100)):
            return  # a busy pool at its limit (the common case under load): nothing to work out
        # A batch takes one slot: what waits for a batch counts as the batches it will make.
        waiting = len(self.queue) + sum(b.batches_waiting for b in self.batchers.values())
        demand = waiting + sum(len(c.active) for c in live)
        fast = self.run_us is not None and demand * self.run_us / 1e6 < STARTUP_S * len(live)
        if fast and len(live) >= self.min_containers:
            return  # the containers there finish this work before a new one could help
        wanted = math.ceil(demand / self.fn.target_inputs) + (self.buffer_containers if demand else 0)
        wanted = min(max(wanted, self.min_containers), int(self.fn.options.get("max_containers", 100)))
        for _ in range(wanted - len(live)):
            if not self._start_container():
                break

    def _start_container(self) -> bool:
        env = self._container_env()
        if env is None:
            return False
        cpu = float(self.fn.options.get("cpu") or 0)
        if cpu and not self.rt.cpus.acquire(cpu):
            self.waiting_reason = f"waiting for CPUs (cpu={cpu:g}; {self.rt.cpus.describe()})"
            self.rt.reclaim(self, lambda c: c.cpus > 0)
            return False
        gpu = self.fn.options.get("gpu")
        gpus: list[int] = []
        if gpu:
            got = self.rt.gpus.acquire(gpu)
            if got is None:
                self.rt.cpus.release(cpu)
                self.waiting_reason = f"waiting for a GPU ({gpu})"
                self.rt.reclaim(self, lambda c: bool(c.gpus))
                return False
            gpus = got
        self.waiting_reason = "waiting for a container to start"
        container = self.rt.containers.start(self.fn.fid, self.fn.max_inputs, gpus, env)
        container.cpus = cpu
        log.info("starting container %s for %s%s", container.id, self.fn.name, f" on GPUs {gpus}" if gpus else "")
        self.containers[container.id] = container
        return True

    def _container_env(self) -> dict[str, str] | None:
        """Its variables, thread pools sized to ``cpu=``, the image's packages first on the path; None until
        the image is built."""
        env = dict(self.fn.env)
        cpu = self.fn.options.get("cpu")
        if cpu:
            env = {**thread_env(float(cpu)), **env}  # the user's own settings win
        image = self.fn.options.get("image")
        if not image:
            return env
        site = self.rt.images.site(image)
        if isinstance(site, Build):
            self._wait_for_image(site)
            return None
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH") or os.environ.get("PYTHONPATH"))
                                            if p)
        return env

    def _wait_for_image(self, build: Build) -> None:
        if build.error is None:
            waited_s = time.monotonic() - build.started
            self.waiting_reason = f"building its image: pip install {' '.join(build.packages)} ({waited_s:.0f} s)"
            return
        error = {"type": ErrorName.IMAGE_BUILD, "message": f"the image of {self.fn.name} could not be built: "
                                                        f"{build.error}", "traceback": ""}
        self._fail_waiting(error, [])

    def scale_down(self, now: float) -> None:
        """Stop containers idle for ``scaledown_window``, keeping ``min_containers`` (+ buffer while busy)."""
        busy = bool(self.waiting) or any(c.state is State.BUSY for c in self.containers.values())
        keep = 0 if self.retired else self.min_containers + (self.buffer_containers if busy else 0)
        window_s = float(self.fn.options.get("scaledown_window_s", 60))
        idle = sorted((c for c in self.live() if c.state is State.IDLE), key=lambda c: c.idle_since)
        surplus = len(self.live()) - keep
        for c in idle[:max(0, surplus)]:
            if self.retired or now - c.idle_since >= window_s:
                self.retire(c)

    def retire(self, c: Container) -> None:
        """Ask an idle container to stop: it runs its @exit hooks and leaves; SIGKILL if it takes too long.

        A leased one is asked for its lease back first (its leaseholder's call may be running):
        once released it is idle as any other, and retired on a later tick.
        """
        if c.lease is not None:
            self.revoke(c)
            return
        self.rt.send_container(c.id, framing.encode({"t": "stop"}))
        self.rt.containers.stop(c, None, EXIT_GRACE_S, signal_now=False)

    def idle_holder(self, holds: Callable[[Container], bool]) -> Container | None:
        """An idle container holding what ``holds`` looks for (GPUs, CPUs) that this pool can give up."""
        if len(self.live()) <= (0 if self.retired else self.min_containers):
            return None
        return next((c for c in self.live() if c.state is State.IDLE and holds(c)), None)

    def check_memory(self) -> None:
        """Stop containers over ``memory=``; their inputs count as lost containers."""
        limit = self.fn.options.get("memory_mib")
        if not limit:
            return
        for c in self.live():
            rss = self.rt.containers.rss_mib(c)
            if rss is not None and rss > limit:
                reason = f"it ran out of memory: {rss:.0f} MiB resident, over its limit of memory={limit} MiB"
                self.rt.containers.stop(c, reason, grace_s=1.0)

    def stop(self, reason: str) -> None:
        """The app is gone: fail what waits, stop every container."""
        self.retired = True
        for inp in list(self.inputs.values()):
            self.finish(inp.id, error_result(inp.id, ErrorName.CANCELLED, reason))
        for c in list(self.containers.values()):
            self.rt.containers.stop(c, reason, STOP_GRACE_S)

    def queue_reason(self) -> str:
        """Why queued inputs wait: for a GPU, for containers to start, or for a busy one to be free."""
        if self.waiting_reason.startswith(("waiting for a GPU", "waiting for CPUs", "building its image")):
            return self.waiting_reason
        starting = sum(1 for c in self.containers.values() if c.state is State.STARTING)
        if starting:
            return f"waiting for a container to start ({starting} starting)"
        limit = int(self.fn.options.get("max_containers", 100))
        return f"waiting for a free container ({len(self.live())} running, max_containers={limit})"

    def _waiting_reason(self) -> str:
        if self.queue or any(b.due() for b in self.batchers.values()):
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
            "waiting_reason": self._waiting_reason() if waiting else "",
        }
        if self.batchers:
            out["batching"] = {method: b.stats.describe() for method, b in self.batchers.items()}
        return out
