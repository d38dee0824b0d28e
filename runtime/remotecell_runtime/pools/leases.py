"""Leases: an idle container lent to one blocking caller on this host, who then calls it directly.

A container is lent when the result of its caller's input is next, the caller asked
for a lease, the container runs one input at a time (it has a ``direct`` socket) and
nothing else wants it (nothing pending, not batched, the pool not retired).  The
pool only hears how the direct calls went (``lease_used``).

Invariants: a leased container takes no other input (``state.room`` is 0); the
grant reaches the caller before the result it came with; a lease ends only by
``released`` from the container (after a ``revoke``) or by the container's exit,
and its holder is told either way (``lease_ended`` here, ``lease_lost`` by the
daemon); an input handed back under a lease (``adopt``) goes on as any other.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from ..containers import ContainerLease, ContainerRecord, State
from ..protocol.errors import ErrorName
from ..protocol.message import encode
from ..protocol.messages.calls import LeaseEndedMsg, LeaseMsg
from ..protocol.messages.containers import LeaseTokenMsg, RevokeMsg
from ..protocol.messages.session import ErrorInfo
from .inputs import Input, error_result, failed_result
from .queue import InputQueue
from .state import STOP_GRACE_S, PoolState


class Leases:
    def __init__(self, pool: PoolState, queue: InputQueue) -> None:
        self.pool = pool
        self.queue = queue

    def lend(self, container: ContainerRecord, inp: Input) -> None:
        """Lend ``container`` to the caller of ``inp`` (whose result is next) if nothing else wants it."""
        pool, queue = self.pool, self.queue
        if inp.lease is None or container.direct is None or container.state is not State.BUSY:
            return
        if container.uses_left is not None:  # a single-use container serves no more calls
            return
        if list(container.active) != [inp.id] or queue.pending or queue.batches.batchers or pool.retired:
            return
        lease = container.lease = ContainerLease(inp.peer, inp.lease, secrets.token_hex(8),
                                                 inp.called_as or pool.fn.fid)
        container.idle_since = time.monotonic()
        pool.rt.send_container(container.id, encode(LeaseTokenMsg(token=lease.token)))
        retries = pool.fn.opts.retries.max_retries > 0
        grant = LeaseMsg(id=inp.id, fid=lease.fid, cid=container.id, addr=container.direct, token=lease.token,
                         timeout_s=pool.fn.timeout_s, retries=retries)
        pool.rt.send_peer(inp.peer, encode(grant))  # before the result: the caller's next call uses it

    def take_one_back(self) -> None:
        leased = [c for c in self.pool.live() if c.lease is not None and not c.lease.revoking]
        if leased:
            self.revoke(leased[0])

    def revoke_all(self) -> None:
        for c in self.pool.live():
            if c.lease is not None:
                self.revoke(c)

    def revoke(self, container: ContainerRecord, grace_s: float | None = None) -> None:
        """Ask for the lease back; stop the container if it is not free ``grace_s`` later."""
        lease = container.lease
        if lease is None or lease.revoking:
            return
        lease.revoking = True
        self.pool.rt.send_container(container.id, encode(RevokeMsg()))
        if grace_s is None:
            return

        def stop_if_still_held() -> None:
            if container.lease is lease:
                reason = f"its leaseholder's call ignored cancellation for {grace_s:g} s"
                self.pool.rt.containers.stop(container, reason, STOP_GRACE_S)

        asyncio.get_running_loop().call_later(grace_s, stop_if_still_held)

    def on_released(self, container: ContainerRecord, idle_s: float, last_id: str) -> None:
        """The container gave the lease up after its holder's call ``last_id``, and takes no more."""
        if container.lease is not None:  # the holder's next call goes through the runtime at once
            ended = LeaseEndedMsg(fid=container.lease.fid, cid=container.id, last=last_id)
            self.pool.rt.send_peer(container.lease.peer, encode(ended))
        container.lease = None
        container.idle_since = time.monotonic() - max(idle_s, 0.0)  # idle since the leaseholder's last call

    def on_used(self, container: ContainerRecord, runs: int, run_us: int) -> None:
        """How the leaseholder's calls went: they count as use (scale-down) and as run time."""
        container.idle_since = time.monotonic()
        if runs > 0:
            self.queue.observe_run(run_us / runs)

    def adopt(self, inp: Input, why: str, cid: str, cause: str = "", error: ErrorInfo | None = None) -> None:
        """An input that ended badly on leased container ``cid``, handed back by its caller: it goes on here.

        ``why``: "timeout" (the caller waited past the timeout: the container is stopped),
        "crash" (the container died under it, ``cause`` says why) or "error" (it raised
        ``error`` and the function has retries).
        """
        pool = self.pool
        pool.inputs[inp.id] = inp
        if why == "timeout":
            container = pool.containers.get(cid)
            if container is not None and container.lease is not None and container.lease.peer == inp.peer:
                pool.stop_timed_out(container)
            self.queue.fail(inp, pool.timeout_result(inp.id, cid))
        elif why == "crash":
            self.queue.fail(inp, error_result(inp.id, ErrorName.CRASHED, cause), lost_container=True)
        else:
            self.queue.fail(inp, failed_result(inp.id, error or ErrorInfo(type="Exception", message="")))
