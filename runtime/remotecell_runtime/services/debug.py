"""Remote post-mortem: a client's pdb commands to the container that holds a failed input's frames.

``debug`` names the frames as ``CONTAINER:KEY`` (from the error the client got) and
carries one pdb command line as text; this service passes it to that container
(``debug_in``) and answers with the container's ``debug_out`` (pdb's text, the
session's state). A container that has stopped holds nothing: the answer says
released, at once. A command the container has not answered in
``COMMAND_TIMEOUT_S`` is refused (a ``p`` of something slow), and one whose
container stops meanwhile answered released. ``debug_held`` keeps a holding
container from being scaled down (``ContainerRecord.holding_until``). The daemon
reads only the text; nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from ..containers import ContainerRecord, State
from ..pools import Peer
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.message import Message, encode
from ..protocol.messages.debug import RELEASED, DebugHeldMsg, DebugInMsg, DebugMsg, DebugOutMsg, DebugReply
from .base import ContainerHandler, Handler, Host, Report, Request, Service, error_reply, refusal, with_id
from .functions import Functions

COMMAND_TIMEOUT_S = 60.0


@dataclasses.dataclass(slots=True)
class Pending:
    peer: Peer
    request_id: object
    cid: str
    asked_s: float


class Debugger(Service):
    """Routes pdb text between clients and the containers holding frames."""

    def __init__(self, host: Host, functions: Functions) -> None:
        self.host = host
        self.functions = functions
        self.pending: dict[str, Pending] = {}
        self._rids = itertools.count()

    def handlers(self) -> dict[type[Message], Handler]:
        return {DebugMsg: self.on_debug}

    def container_handlers(self) -> dict[type[Message], ContainerHandler]:
        return {DebugOutMsg: self.on_out, DebugHeldMsg: self.on_held}

    def _live(self, cid: str) -> ContainerRecord | None:
        container = self.functions.containers.containers.get(cid)
        if container is None or container.exit is not None or container.state is State.STOPPING:
            return None
        return container

    def on_debug(self, req: Request[DebugMsg]) -> Message | None:
        cid, _, key = req.msg.target.partition(":")  # (the container reads the key from the target itself)
        if not cid or not key:
            raise refusal(ErrorName.INVALID, f"debug target {req.msg.target!r} is not CONTAINER:KEY: pass the "
                                             "remote exception itself, rc.debug(exc)")
        if self._live(cid) is None:
            return DebugReply(text=f"released: container {cid}, which raised it, has stopped, and its frames "
                                   "with it\n", state=RELEASED)
        rid = f"d{next(self._rids)}"
        self.pending[rid] = Pending(req.peer, req.id, cid, time.monotonic())
        self.host.send_container(cid, encode(DebugInMsg(rid=rid, request=req.msg)))
        return None

    def on_out(self, container: ContainerRecord, report: Report[DebugOutMsg]) -> None:
        pending = self.pending.pop(report.msg.rid, None)
        if pending is not None:  # (else timed out meanwhile)
            self.host.send_peer(pending.peer, framing.encode(with_id(report.msg.reply, pending.request_id)))

    def on_held(self, container: ContainerRecord, report: Report[DebugHeldMsg]) -> None:
        container.holding_until = max(container.holding_until, time.monotonic() + report.msg.hold_s)

    def tick(self, now: float) -> None:
        for rid, pending in list(self.pending.items()):
            if self._live(pending.cid) is None:
                del self.pending[rid]
                reply = DebugReply(text=f"released: container {pending.cid} stopped, and the frames with it\n",
                                   state=RELEASED)
                self.host.send_peer(pending.peer, framing.encode(with_id(reply, pending.request_id)))
            elif now - pending.asked_s > COMMAND_TIMEOUT_S:
                del self.pending[rid]
                self.host.send_peer(pending.peer, error_reply(
                    pending.request_id, ErrorName.TIMEOUT,
                    f"the pdb command did not finish within {COMMAND_TIMEOUT_S:g} s in container {pending.cid}"))
