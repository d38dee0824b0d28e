"""The input queue's burst hold (runtime/pools/queue.py) without processes: asyncio's own timers, no containers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from remotecell_runtime.pools import Input
from remotecell_runtime.pools.queue import BURST_HOLD_S, InputQueue
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.options import FunctionOptions


def _queue() -> tuple[InputQueue, asyncio.Event]:
    """A queue whose pool has no batched methods; the event is set when the queue asks for a dispatch."""
    dispatched = asyncio.Event()
    pool = SimpleNamespace(fn=SimpleNamespace(opts=FunctionOptions()))
    return InputQueue(pool, dispatched.set), dispatched  # type: ignore[arg-type]


def _inputs(*ids: str) -> list[Input]:
    return [Input(i, (None, b"jobs"), Payload([b""])) for i in ids]


def test_a_lone_soon_input_goes_at_once_and_a_burst_leaves_together_after_the_hold():
    async def main() -> None:
        queue, dispatched = _queue()
        assert queue.enqueue(_inputs("a"), soon=True)  # after a quiet spell: dispatch now
        assert [i.id for i in queue.pending] == ["a"]
        queue.pending.clear()
        assert not queue.enqueue(_inputs("b"), soon=True)  # right after: held
        assert not queue.enqueue(_inputs("c", "d"), soon=True)
        assert not dispatched.is_set() and [i.id for i in queue.held] == ["b", "c", "d"] and queue.waiting == 3
        await asyncio.wait_for(dispatched.wait(), timeout=10 * BURST_HOLD_S + 1)
        assert [i.id for i in queue.pending] == ["b", "c", "d"] and not queue.held
        assert queue.enqueue(_inputs("e"), soon=False)  # not ``soon``: never held
        assert [i.id for i in queue.pending][-1] == "e"

    asyncio.run(main())


def test_a_held_input_that_ends_leaves_the_hold():
    async def main() -> None:
        queue, _ = _queue()
        queue.enqueue(_inputs("a"), soon=True)
        held = _inputs("b", "c")
        queue.enqueue(held, soon=True)
        queue._detach(held[0])  # cancelled, or its pool stopped
        assert [i.id for i in queue.held] == ["c"] and queue.waiting == 2

    asyncio.run(main())
