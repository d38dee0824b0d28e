"""The input queue of one pool: pending inputs, dispatch to free slots, deadlines, cancels, retries.

Invariants: every input of the pool is in ``pool.inputs`` until ``finish`` sends its
one result and forgets it; meanwhile it is in exactly one of ``pending`` (waiting for
a slot), ``held`` (a burst's, see below), a batcher (``batches.py``), a retry timer, or
on a container (``running``, ``inp.container`` set, its id in the container's ``active``).  ``running`` is in the
order inputs were sent; every attempt has the same timeout, so the first one has
the earliest deadline and one timer watches them all.  A retry goes to the front.

A fast function (its inputs run in well under ``PREFETCH_BUDGET_US``) gets a backlog:
a container holds more inputs than it runs, so it never waits for the daemon between
two of them, and they travel many to a message.

Inputs that need not start at once (spawned calls, whose callers only wait for the
job store's commit) come through ``enqueue(soon=True)``: one after a quiet spell is
dispatched at once; those that follow within ``BURST_HOLD_S`` of it are ``held`` and
dispatched together when the hold ends, ``BURST_HOLD_S`` later at most.  A sequential
``f.spawn`` loop then reaches its containers many inputs to a message, and their
results come back the same way, rather than one message each way per call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from ..containers import ContainerRecord, State
from ..protocol import framing, sharedmem
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.message import encode
from ..protocol.messages.containers import CancelInputMsg
from ..protocol.messages.session import ErrorInfo
from .batches import BatchAssembly
from .inputs import Input, Result, cancelled_result, error_result, failed_result
from .state import STOP_GRACE_S, PoolState, occupy, release_slot, room

log = logging.getLogger("remotecell.runtime")

CANCEL_GRACE_S = 5.0
PREFETCH_BUDGET_US = 2000  # how much queued work a container may hold beyond its running inputs
PREFETCH_MAX = 256
BURST_HOLD_S = 0.002  # the longest a spawned input of a burst waits, to leave with the others


class InputQueue:
    def __init__(self, pool: PoolState, dispatch: Callable[[], None]) -> None:
        self.pool = pool
        self.dispatch_all = dispatch  # the whole pool's dispatch: batches, this queue, scaling
        self.batches = BatchAssembly(pool, dispatch, self.fail)  # batched inputs wait there, not in ``pending``
        self.pending: collections.deque[Input] = collections.deque()
        self.held: list[Input] = []  # a burst's inputs that may start a little later (see enqueue)
        self._hold_timer: asyncio.TimerHandle | None = None
        self._last_release = -BURST_HOLD_S  # event-loop time the last ``soon`` inputs were let go
        self.running: dict[str, Input] = {}
        self.run_us: float | None = None  # moving average of how long one input runs
        self._deadline_timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """Inputs not yet on a container: queued, or waiting for their batch."""
        return len(self.pending) + len(self.held) + len(self.batches)

    def enqueue(self, inputs: list[Input], soon: bool) -> bool:
        """Queue ``inputs``; False when they are all held back (``soon``, in a burst): nothing to dispatch now."""
        if not soon or not inputs:
            self.pending.extend(inputs)
            return True
        loop = asyncio.get_running_loop()
        if self._hold_timer is None and loop.time() - self._last_release >= BURST_HOLD_S:
            self._last_release = loop.time()
            self.pending.extend(inputs)
            return True
        self.held.extend(inputs)
        if self._hold_timer is None:
            self._hold_timer = loop.call_later(BURST_HOLD_S, self._release_held)
        return False

    def _release_held(self) -> None:
        self._hold_timer = None
        self._last_release = asyncio.get_running_loop().time()
        if self.held:  # none when they were cancelled meanwhile, or their pool stopped
            self.pending.extend(self.held)
            self.held.clear()
            self.dispatch_all()

    def fail_waiting(self, error: ErrorInfo, payloads: list[Payload]) -> None:
        """Every input not yet on a container ends with ``error``."""
        for inp in list(self.pending) + self.held + self.batches.drain():
            self.finish(inp.id, failed_result(inp.id, error, payloads))

    def observe_run(self, run_us: float) -> None:
        self.run_us = run_us if self.run_us is None else 0.8 * self.run_us + 0.2 * run_us

    @property
    def prefetch(self) -> int:
        """Inputs a container may hold beyond ``max_inputs``: none until the function is known to be fast."""
        if self.run_us is None or self.run_us >= PREFETCH_BUDGET_US:
            return 0
        return min(PREFETCH_MAX, int(PREFETCH_BUDGET_US / max(self.run_us, 1.0)))

    def dispatch(self) -> None:
        """Give pending inputs to free slots, many to a message."""
        if not self.pending:
            return
        prefetch = self.prefetch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool.fn.timeout_s  # every input sent now times out at the same time
        sent: dict[str, list[Input]] = {}
        while self.pending:
            first = self.pending[0]
            suspect = first.suspect
            container = self._idle_container() if suspect else self._container_for(first, prefetch)
            if container is None:
                break
            container.isolated = suspect  # a suspect runs alone: nothing else goes there meanwhile
            # Slow functions spread one input at a time over the freest containers; fast ones fill a backlog.
            alone = suspect or first.affinity is not None
            n = min(room(container, prefetch), len(self.pending)) if prefetch and not alone else 1
            batch = sent.setdefault(container.id, [])
            for i in range(n):
                if i and self.pending[0].suspect:  # it waits for a container of its own
                    break
                inp = self.pending.popleft()
                self._run(inp, container, deadline)
                batch.append(inp)
        if sent and self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._check_deadlines)
        for cid, inputs in sent.items():
            frames = inputs[0].frames if len(inputs) == 1 else None
            self.pool.rt.send_container(cid, frames or framing.encode_many("calls", [inp.entry() for inp in inputs]))

    def _container_for(self, inp: Input, prefetch: int) -> ContainerRecord | None:
        """Its session's container when it has room (best effort, as Modal's), else the freest."""
        if inp.affinity is not None:
            sticky = self.pool.sticky_container(inp.affinity)
            if sticky is not None and room(sticky, prefetch):
                return sticky
        return self.pool.free_container(prefetch)

    def _idle_container(self) -> ContainerRecord | None:
        """A container running nothing, for a suspect input to run alone on."""
        return next((c for c in self.pool.containers.values()
                     if c.state is State.IDLE and not c.active and c.lease is None), None)

    def container_lost(self, container: ContainerRecord, cause: str) -> None:
        """``container`` died under its inputs (its batches are ``batches.py``'s).

        An input that was there alone is charged the crash (retried up to ``crash_retries``, then
        failed as poison). Inputs that were there together are not: any of them may have been
        running (a backlog's results leave many to a message, so one that finished may not have said
        so yet). Each becomes a suspect, goes back to the front of the queue uncharged and from now
        on runs alone, so the next crash names the input that causes it.
        """
        slots = list(container.active)
        inputs = self._inputs_on(container, slots)
        if len(slots) == 1 and inputs:
            self.fail(inputs[0], error_result(inputs[0].id, ErrorName.CRASHED, cause), lost_container=True)
            return
        if inputs:
            log.info("%d inputs of %s run again, each alone: their container died under them", len(inputs),
                     self.pool.fn.name)
        for inp in reversed(inputs):
            inp.suspect = True
            self._detach(inp)
            self.pending.appendleft(inp)

    def _inputs_on(self, container: ContainerRecord, slots: list[str]) -> list[Input]:
        inputs = [self.pool.inputs.get(slot) for slot in slots]
        return [inp for inp in inputs if inp is not None and inp.container is container]

    def _run(self, inp: Input, container: ContainerRecord, deadline: float) -> None:
        inp.container = container
        occupy(container, inp.id)
        inp.deadline = deadline
        self.running[inp.id] = inp

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

    def _timed_out(self, inp: Input) -> None:
        container = inp.container
        assert container is not None
        self.pool.stop_timed_out(container)
        self.fail(inp, self.pool.timeout_result(inp.id, container.id))
        self.dispatch_all()

    def finish(self, input_id: str, result: Result) -> None:
        """Send the one result of ``input_id`` to its caller and forget the input."""
        inp = self.pool.inputs.pop(input_id, None)
        if inp is None:
            return
        self._detach(inp)
        if result.status != "ok":  # a container that succeeded owns the input's shared memory now
            sharedmem.discard([inp.payload])
        if inp.attempt > 1:
            result.entry.attempt = inp.attempt
        if inp.cache_key is not None and result.status == "ok" and self.pool.fn.opts.cache is not None:
            self.pool.rt.result_cache.put(inp.cache_key, self.pool.fn.opts.cache.code, result.payloads[0])
        self.pool.rt.send_result(inp.peer, result)
        self.pool.answered += 1
        self.pool.rt.input_done(input_id)

    def _detach(self, inp: Input) -> None:
        """Take ``inp`` off its container (or out of the queue, or its batcher)."""
        self.running.pop(inp.id, None)
        if inp.container is not None:
            release_slot(inp.container, inp.id)  # a batched input's slot is its batch's: no-op
            inp.container = None
        elif inp in self.held:
            self.held.remove(inp)
        elif not self.batches.remove(inp) and inp in self.pending:
            self.pending.remove(inp)

    def fail(self, inp: Input, result: Result, lost_container: bool = False) -> None:
        """An attempt failed: try again per the function's retries, else send ``result``."""
        self._detach(inp)
        fn = self.pool.fn
        if lost_container:
            inp.crashes += 1
            # A %%remote session must not rerun a cell on a fresh container: it sets crash_retries=0.
            cap = fn.opts.crash_retries
            if inp.crashes <= cap:
                self._retry(inp, 0.0)
                return
            if cap and result.entry.error is not None:
                result.entry.error.message += f"\nthe input failed as poison: {inp.crashes} containers died under it"
                result.frames = None
        else:
            delay_s = fn.retry_delay_s(inp.attempt)
            if delay_s is not None:
                inp.attempt += 1
                sharedmem.discard(result.payloads)
                self._retry(inp, delay_s)
                return
        self.finish(inp.id, result)

    def _retry(self, inp: Input, delay_s: float) -> None:
        log.info("retrying input %s of %s in %.3g s (attempt %d)", inp.id, self.pool.fn.name, delay_s, inp.attempt)
        asyncio.get_running_loop().call_later(delay_s, self._requeue, inp)

    def _requeue(self, inp: Input) -> None:
        if self.pool.inputs.get(inp.id) is not inp:  # cancelled meanwhile
            return
        if not self.batches.add(inp, front=True):  # a batched one joins its next batch (retries are per input)
            self.pending.appendleft(inp)
        self.dispatch_all()

    def cancel(self, input_id: str) -> None:
        inp = self.pool.inputs.get(input_id)
        if inp is None:
            return
        container = inp.container
        if self.batches.running(input_id):
            container = None  # its batch runs on for the others; its result will be dropped
        if container is not None:
            # The container is told; it frees the slot when it reports back, or is stopped.
            if container.max_inputs == 1:  # the input may run on its I/O thread: interrupt it
                self.pool.rt.containers.cancel(container, input_id)
            else:
                self.pool.rt.send_container(container.id, encode(CancelInputMsg(id=input_id)))
            loop = asyncio.get_running_loop()
            loop.call_later(CANCEL_GRACE_S, self._force_stop, container, input_id)
            container.active[f"cancelled:{input_id}"] = None
        self.finish(input_id, cancelled_result(input_id))
        self.dispatch_all()

    def _force_stop(self, container: ContainerRecord, input_id: str) -> None:
        if f"cancelled:{input_id}" in container.active:
            reason = f"it was stopped because input {input_id} ignored cancellation for {CANCEL_GRACE_S:g} s"
            self.pool.rt.containers.stop(container, reason, STOP_GRACE_S)
