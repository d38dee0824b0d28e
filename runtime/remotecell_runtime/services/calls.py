"""Calls: inputs from clients into pools, and the containers' messages about them.

Client side: ``call`` (one input, its frames kept so a result can go back
untouched), ``calls`` (many inputs of one function, one payload each),
``cancel``, and ``lease_return`` (a call made under a lease that ended badly
there goes on as a plain input).  An input id runs once: a resent one (after a
reconnect) only moves its answer to the socket that asked last.

Container side: a new container says ``hello`` and gets its function
(``load``); then ``ready``, ``result``/``results``, ``output``/``item``
(routed to the caller, or to the job store's logs for spawned inputs),
``released`` and ``lease_used`` go to its pool.  Payloads pass through unread.
"""

from __future__ import annotations

from ..containers import ContainerRecord
from ..pools import CANCEL_GRACE_S, Input, Peer, Result, ResultMessage, error_result
from ..protocol import framing, sharedmem
from ..protocol.errors import ErrorName
from ..protocol.message import Message, encode
from ..protocol.messages.calls import (
    CacheClearMsg,
    CacheClearReply,
    CallMsg,
    CallsMsg,
    CancelMsg,
    ItemMsg,
    LeaseReturnMsg,
    OutputMsg,
    ResultMsg,
    ResultsMsg,
)
from ..protocol.messages.containers import (
    ContainerHelloMsg,
    LeaseUsedMsg,
    LoadFailedMsg,
    LoadMsg,
    ReadyMsg,
    ReleasedMsg,
)
from .base import ContainerHandler, Handler, Report, Request, Service, refusal
from .functions import JOB_PEER, Functions

LEASE_RETURN_WHY = ("timeout", "crash", "error")


class Calls(Service):
    def __init__(self, functions: Functions) -> None:
        self.functions = functions

    def handlers(self) -> dict[type[Message], Handler]:
        return {CallMsg: self.on_call, CallsMsg: self.on_calls, CancelMsg: self.on_cancel,
                LeaseReturnMsg: self.on_lease_return, CacheClearMsg: self.on_cache_clear}

    def container_handlers(self) -> dict[type[Message], ContainerHandler]:
        return {
            ContainerHelloMsg: self.on_hello,
            ReadyMsg: self.on_ready,
            LoadFailedMsg: self.on_load_failed,
            OutputMsg: self.on_output,
            ItemMsg: self.on_item,
            ResultMsg: self.on_result,
            ResultsMsg: self.on_results,
            ReleasedMsg: self.on_released,
            LeaseUsedMsg: self.on_lease_used,
        }

    # -- client messages ----------------------------------------------------------------------

    def on_call(self, req: Request[CallMsg]) -> None:
        msg = req.msg
        if len(req.payloads) != 1:
            raise refusal(ErrorName.INVALID, f"call {msg.id!r}: needs exactly one payload, the arguments")
        inp = Input(msg.id, req.peer, req.payloads[0], req.frames, msg.method, msg.shm, gen=msg.gen)
        if msg.lease and req.peer[0].local:
            inp.lease = req.sid
        self._submit(req, msg.fid, [inp])

    def on_calls(self, req: Request[CallsMsg]) -> None:
        """Many inputs of one function in one message, one payload each."""
        msg = req.msg
        inputs = []
        for entry, payloads in framing.pair(msg.entries, req.payloads):
            if len(payloads) != 1:
                raise refusal(ErrorName.INVALID, f"call {entry.id!r}: needs exactly one payload, the arguments")
            inputs.append(Input(entry.id, req.peer, payloads[0], None, entry.method or msg.method,
                                entry.shm or msg.shm, gen=entry.gen))
        self._submit(req, msg.fid, inputs)

    def _submit(self, req: Request[CallMsg] | Request[CallsMsg], fid: str, inputs: list[Input]) -> None:
        fns = self.functions
        pool = fns.current_pool(fid)
        fresh = []
        for inp in inputs:
            known = fns.input_pool.get(inp.id)
            if known is None:
                fresh.append(inp)
            else:  # resent (after a reconnect): it runs once, and answers the socket that asked last
                sharedmem.discard([inp.payload])
                if inp.id in known.inputs:
                    known.inputs[inp.id].peer = req.peer
        if pool is None:
            sharedmem.discard(req.payloads)
            why = fns.gone(fid)
            with fns.batched():
                for inp in fresh:
                    fns.send_result(req.peer, error_result(inp.id, ErrorName.NOT_FOUND, why))
            return
        for inp in fresh:
            fns.input_pool[inp.id] = pool
            if pool.fn.fid != fid:
                inp.called_as = fid  # a lease, if any, is granted under the fid it holds
        pool.submit(*fresh)

    def on_lease_return(self, req: Request[LeaseReturnMsg]) -> None:
        """A call made under a lease that ended badly there (see ``Pool.adopt``): it goes on as a plain input."""
        msg = req.msg
        if len(req.payloads) != 1 or msg.why not in LEASE_RETURN_WHY:
            raise refusal(ErrorName.INVALID, f"lease_return {msg.id!r}: needs why=timeout|crash|error "
                          "and one payload, the arguments")
        if msg.id in self.functions.input_pool:  # resent: it runs once
            sharedmem.discard(req.payloads)
            return
        inp = Input(msg.id, req.peer, req.payloads[0], None, msg.method, msg.shm)
        pool = self.functions.live_pool(msg.fid)
        self.functions.input_pool[msg.id] = pool
        pool.adopt(inp, msg.why, msg.cid, msg.cause, msg.error)

    def on_cancel(self, req: Request[CancelMsg]) -> None:
        for input_id in req.msg.ids:
            pool = self.functions.input_pool.get(input_id)
            if pool is not None:
                pool.cancel(input_id)
            else:
                self._cancel_leased(req, input_id)

    def _cancel_leased(self, req: Request[CancelMsg], input_id: str) -> None:
        """A call its caller sent straight to a leased container: interrupt it there and take the lease back."""
        fns = self.functions
        container = fns.containers.containers.get(req.msg.cid or "")
        pool = fns.pool_of(container) if container is not None else None
        if container is None or pool is None or container.lease is None or container.lease.peer != req.peer:
            return
        fns.containers.cancel(container, input_id)
        pool.revoke(container, grace_s=CANCEL_GRACE_S)

    def on_cache_clear(self, req: Request[CacheClearMsg]) -> CacheClearReply:
        """``f.cache_clear()``: the result cache forgets the entries of that function's code."""
        if not req.msg.code:
            raise refusal(ErrorName.INVALID, "cache_clear needs the function's code digest ('code')")
        return CacheClearReply(cleared=self.functions.result_cache.clear(req.msg.code))

    # -- container messages -------------------------------------------------------------------

    def on_hello(self, container: ContainerRecord, report: Report[ContainerHelloMsg]) -> None:
        pool = self.functions.pool_of(container)
        if pool is None:
            self.functions.containers.stop(container, "its function is gone", 1.0)
            return
        fn = pool.fn
        env = self.functions.containers.load_env(container)
        self.functions.send_container(container.id, encode(LoadMsg(fid=fn.fid, options=fn.options, env=env),
                                                           [fn.body]))

    def on_ready(self, container: ContainerRecord, report: Report[ReadyMsg]) -> None:
        pool = self.functions.pool_of(container)
        if report.msg.direct is not None:
            container.direct = report.msg.direct
        if pool is not None:
            pool.on_ready(container)

    def on_released(self, container: ContainerRecord, report: Report[ReleasedMsg]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_released(container, report.msg.idle_s, report.msg.last)

    def on_lease_used(self, container: ContainerRecord, report: Report[LeaseUsedMsg]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.leases.on_used(container, report.msg.n, report.msg.us)

    def on_load_failed(self, container: ContainerRecord, report: Report[LoadFailedMsg]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_load_failed(container, report.msg.error, report.payloads())

    def on_output(self, container: ContainerRecord, report: Report[OutputMsg]) -> None:
        pool = self.functions.pool_of(container)
        app = self.functions.apps.get(pool.fn.app_id) if pool is not None else None
        peer = self._caller_of(report.msg.id)
        if pool is not None and app is not None and report.msg.stream != "display":
            self.functions.app_logs.add(app.app_id, app.name, pool.fn.name, report.msg.text, report.msg.id,
                                        unsent=peer is None or peer is JOB_PEER)
        if peer is JOB_PEER:
            if self.functions.job_sink is not None:
                self.functions.job_sink.on_output(report.msg.id, report.msg.text)
        elif peer is not None:
            self.functions.send_peer(peer, report.frames)

    def on_item(self, container: ContainerRecord, report: Report[ItemMsg]) -> None:
        """What a generator yields goes to its caller as it came (a spawned generator keeps no items)."""
        peer = self._caller_of(report.msg.id)
        if peer is not None and peer is not JOB_PEER:
            self.functions.send_peer(peer, report.frames)

    def _caller_of(self, input_id: str) -> Peer | None:
        pool = self.functions.input_pool.get(input_id)
        inp = pool.inputs.get(input_id) if pool is not None else None
        return inp.peer if inp is not None else None

    def on_result(self, container: ContainerRecord, report: Report[ResultMsg]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_results(container, [Result(report.msg, report.payloads(), report.frames)])

    def on_results(self, container: ContainerRecord, report: Report[ResultsMsg]) -> None:
        pool = self.functions.pool_of(container)
        if pool is None:
            return
        message = ResultMessage(report.msg, report.header, report.frames)
        with self.functions.batched():
            pool.on_results(container, message.results())
