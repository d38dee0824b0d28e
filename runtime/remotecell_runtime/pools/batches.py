"""Batch assembly for ``@rc.batched`` functions (or methods), over ``batching.Batcher``.

Inputs of a batched method wait in that method's batcher instead of the queue; a due
batch takes one free slot (batches are never prefetched) and travels as one ``batch``
message with the callers' payloads as they came.

Invariants: an input is in ``batch_of`` from the moment its batch is sent until the
container answers for it (or the batch's attempt ends: timeout, crash); a batch holds
its container's slot (its id in ``active``) until every input is answered, and its
one timer covers one attempt of the whole batch.  Retries are per input: a retried
input goes to the front of its batcher and may join a different batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..batching import Batch, Batcher
from ..containers import ContainerRecord
from ..protocol.errors import ErrorName
from ..protocol.message import encode
from ..protocol.messages.containers import BatchMsg
from .inputs import Input, Result, error_result
from .state import PoolState, occupy, release_slot

Fail = Callable[..., None]  # ``InputQueue.fail(inp, result, lost_container=False)``: retries, else the result


class BatchAssembly:
    def __init__(self, pool: PoolState, dispatch: Callable[[], None], fail: Fail) -> None:
        self.pool = pool
        self.dispatch_all = dispatch  # the whole pool's dispatch
        self.fail = fail
        self.batchers: dict[str, Batcher[Input]] = {
            method: Batcher(method, policy.max_batch_size, policy.wait_ms, dispatch)
            for method, policy in pool.fn.opts.batch_policies().items()
        }
        self.batch_of: dict[str, Batch[Input]] = {}  # input id -> its running batch (until its result is in)

    def __len__(self) -> int:
        """Inputs waiting for their batch."""
        return sum(len(b) for b in self.batchers.values()) if self.batchers else 0

    @property
    def batches_waiting(self) -> int:
        """How many batches the waiting inputs make: a batch takes one slot, so that is what the scaler plans for."""
        return sum(b.batches_waiting for b in self.batchers.values())

    def any_due(self) -> bool:
        return any(b.due() for b in self.batchers.values())

    def add(self, inp: Input, front: bool = False) -> bool:
        """Queue a batched input in its batcher; False if its method is not batched."""
        batcher = self.batchers.get(inp.method or "") if self.batchers else None
        if batcher is None:
            return False
        batcher.add(inp, front=front)
        return True

    def remove(self, inp: Input) -> bool:
        """Take a cancelled input out of its batcher; False if it was not waiting in one."""
        batcher = self.batchers.get(inp.method or "") if self.batchers else None
        return batcher is not None and batcher.remove(inp)

    def running(self, input_id: str) -> bool:
        return input_id in self.batch_of

    def drain(self) -> list[Input]:
        return [inp for b in self.batchers.values() for inp in b.drain()]

    def dispatch(self) -> None:
        for batcher in self.batchers.values():
            while batcher.due():
                container = self.pool.free_container(0)
                if container is None:
                    return
                suspect = batcher.pending[0].suspect  # a batch's suspect runs in a batch of its own
                batch = batcher.take(limit=1 if suspect else None)
                assert batch is not None
                self._run(batch, container)

    def _run(self, batch: Batch[Input], container: ContainerRecord) -> None:
        """One message to the container: the inputs' payloads as they came, to be called once with lists."""
        batch.container = container
        occupy(container, batch.id)  # a batch takes one slot
        order = BatchMsg(id=batch.id, ids=[inp.id for inp in batch.items], shm=[inp.shm for inp in batch.items],
                         method=batch.method or None)
        for inp in batch.items:
            inp.container = container
            self.batch_of[inp.id] = batch
        self.pool.rt.send_container(container.id, encode(order, [inp.payload for inp in batch.items]))
        batch.timer = asyncio.get_running_loop().call_later(self.pool.fn.timeout_s, self._timed_out, batch)

    def answered(self, container: ContainerRecord, input_id: str) -> None:
        """The container answered for ``input_id``: if it is of a batch of that container, that batch owes one less."""
        batch = self.batch_of.get(input_id) if self.batch_of else None
        if batch is not None and batch.container is container:
            self._done(batch, input_id)

    def _done(self, batch: Batch[Input], input_id: str) -> None:
        """The batch's slot frees when the container answered for all its inputs."""
        self.batch_of.pop(input_id, None)
        batch.outstanding.discard(input_id)
        if batch.outstanding:
            return
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.container is not None:
            release_slot(batch.container, batch.id)

    def _abandon(self, batch: Batch[Input], result_for: Callable[[str], Result], lost_container: bool = False) -> None:
        """The batch's attempt ended without its results (timeout, crash): each live input fails."""
        for input_id in list(batch.outstanding):
            self._done(batch, input_id)
            inp = self.pool.inputs.get(input_id)
            if inp is not None and inp.container is batch.container:
                self.fail(inp, result_for(input_id), lost_container=lost_container)

    def _timed_out(self, batch: Batch[Input]) -> None:
        container = batch.container
        batch.timer = None
        fn = self.pool.fn
        msg = (f"a batch of {len(batch.items)} inputs of {fn.name} ran past its timeout of "
               f"{fn.timeout_s:g} s; container {container.id} was stopped and will be replaced")
        self.pool.stop_timed_out(container)
        self._abandon(batch, lambda input_id: error_result(input_id, ErrorName.TIMEOUT, msg))
        self.dispatch_all()

    def container_lost(self, container: ContainerRecord, cause: str) -> None:
        """``container`` died: a batch of one input on it charges that input the crash; in a larger batch
        each input becomes a suspect and goes back, uncharged, to run in a batch of its own (see
        ``queue.InputQueue.container_lost``)."""
        for batch in {b.id: b for b in self.batch_of.values() if b.container is container}.values():
            if len(batch.outstanding) == 1:
                self._abandon(batch, lambda input_id: error_result(input_id, ErrorName.CRASHED, cause),
                              lost_container=True)
                continue
            for inp in reversed([i for i in batch.items if i.id in batch.outstanding]):
                self._done(batch, inp.id)
                if self.pool.inputs.get(inp.id) is inp and inp.container is container:
                    inp.container, inp.suspect = None, True
                    self.add(inp, front=True)

    def stats(self) -> dict[str, Any]:
        return {method: b.stats.describe() for method, b in self.batchers.items()}
