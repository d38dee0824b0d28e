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

from typing import Any

from ..containers import ContainerRecord
from ..pools import CANCEL_GRACE_S, Input, Result, ResultMessage, error_result
from ..protocol import framing, sharedmem
from ..protocol.errors import ErrorName
from ..protocol.framing import Frame
from .base import ContainerHandler, Handler, Request, Service, refusal
from .functions import JOB_PEER, Functions

LEASE_RETURN_WHY = ("timeout", "crash", "error")


class Calls(Service):
    def __init__(self, functions: Functions) -> None:
        self.functions = functions

    def handlers(self) -> dict[str, Handler]:
        return {"call": self.on_call, "calls": self.on_calls, "cancel": self.on_cancel,
                "lease_return": self.on_lease_return}

    def container_handlers(self) -> dict[str, ContainerHandler]:
        return {
            "hello": self.on_hello,
            "ready": self.on_ready,
            "load_failed": self.on_load_failed,
            "output": self.on_output,
            "item": self.on_output,  # what a generator yields, routed like its output
            "result": self.on_result,
            "results": self.on_results,
            "released": self.on_released,
            "lease_used": self.on_lease_used,
        }

    # -- client messages ----------------------------------------------------------------------

    def on_call(self, req: Request) -> None:
        input_id = str(req.header["id"])
        if len(req.payloads) != 1:
            raise refusal(ErrorName.INVALID, f"call {input_id!r}: needs exactly one payload, the arguments")
        method = req.header.get("m")
        inp = Input(input_id, req.peer, req.payloads[0], req.frames, method, bool(req.header.get("shm")))
        if req.header.get("lease") and req.peer[0].local:
            inp.lease = str(req.header.get("sid", ""))
        self._submit(req, [inp])

    def on_calls(self, req: Request) -> None:
        """Many inputs of one function in one message: ``e`` lists them, one payload each."""
        method, shm = req.header.get("m"), bool(req.header.get("shm"))
        inputs = []
        for entry, payloads in framing.split_many(req.header, req.payloads):
            if len(payloads) != 1:
                raise refusal(ErrorName.INVALID, f"call {entry['id']!r}: needs exactly one payload, the arguments")
            inputs.append(Input(entry["id"], req.peer, payloads[0], None, method, shm))
        self._submit(req, inputs)

    def _submit(self, req: Request, inputs: list[Input]) -> None:
        fns = self.functions
        pool = fns.current_pool(req.header.get("fid", ""))
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
            msg = fns.gone(req.header.get("fid"))
            with fns.batched():
                for inp in fresh:
                    fns.send_result(req.peer, error_result(inp.id, ErrorName.NOT_FOUND, msg))
            return
        for inp in fresh:
            fns.input_pool[inp.id] = pool
            if pool.fn.fid != req.header.get("fid"):
                inp.called_as = str(req.header.get("fid"))  # a lease, if any, is granted under the fid it holds
        pool.submit(*fresh)

    def on_lease_return(self, req: Request) -> None:
        """A call made under a lease that ended badly there (see ``Pool.adopt``): it goes on as a plain input."""
        input_id, why = str(req.header["id"]), req.header.get("why")
        if len(req.payloads) != 1 or why not in LEASE_RETURN_WHY:
            raise refusal(ErrorName.INVALID, f"lease_return {input_id!r}: needs why=timeout|crash|error "
                          "and one payload, the arguments")
        if input_id in self.functions.input_pool:  # resent: it runs once
            sharedmem.discard(req.payloads)
            return
        inp = Input(input_id, req.peer, req.payloads[0], None, req.header.get("m"), bool(req.header.get("shm")))
        pool = self.functions.live_pool(req.header.get("fid"))
        self.functions.input_pool[input_id] = pool
        pool.adopt(inp, str(why), str(req.header.get("cid", "")), str(req.header.get("cause", "")),
                   req.header.get("error"))

    def on_cancel(self, req: Request) -> None:
        for input_id in req.header.get("ids", []):
            pool = self.functions.input_pool.get(input_id)
            if pool is not None:
                pool.cancel(input_id)
            else:
                self._cancel_leased(req, str(input_id))

    def _cancel_leased(self, req: Request, input_id: str) -> None:
        """A call its caller sent straight to a leased container: interrupt it there and take the lease back."""
        fns = self.functions
        container = fns.containers.containers.get(str(req.header.get("cid", "")))
        pool = fns.pool_of(container) if container is not None else None
        if container is None or pool is None or container.lease is None or container.lease.peer != req.peer:
            return
        fns.containers.cancel(container, input_id)
        pool.revoke(container, grace_s=CANCEL_GRACE_S)

    # -- container messages -------------------------------------------------------------------

    def on_hello(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if pool is None:
            self.functions.containers.stop(container, "its function is gone", 1.0)
            return
        fn = pool.fn
        load = {"t": "load", "fid": fn.fid, "options": fn.options}
        self.functions.send_container(container.id, framing.encode(load, [fn.body]))

    def on_ready(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if isinstance(header.get("direct"), str):
            container.direct = header["direct"]
        if pool is not None:
            pool.on_ready(container)

    def on_released(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_released(container, float(header.get("idle_s", 0.0)), str(header.get("last", "")))

    def on_lease_used(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_lease_used(container, int(header.get("n", 0)), int(header.get("us", 0)))

    def on_load_failed(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_load_failed(container, header["error"], frames)

    def on_output(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.input_pool.get(header.get("id", ""))
        inp = pool.inputs.get(header["id"]) if pool is not None else None
        if inp is None:
            return
        if inp.peer is not JOB_PEER:
            self.functions.send_peer(inp.peer, frames)
        elif header["t"] == "output" and self.functions.job_sink is not None:
            self.functions.job_sink.on_output(inp.id, str(header.get("text", "")))

    def on_result(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if pool is not None:
            pool.on_results(container, [Result(header, framing.split_payloads(header, frames[2:]), frames)])

    def on_results(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.functions.pool_of(container)
        if pool is None:
            return
        message = ResultMessage(header, frames)
        with self.functions.batched():
            pool.on_results(container, message.results())
