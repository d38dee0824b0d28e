"""The runtime itself: ``hello`` (versions, shared memory, GPUs), ``ping``, ``status`` and ``shutdown``."""

from __future__ import annotations

import asyncio
import os

from ..protocol.message import Message
from ..protocol.messages.session import (
    EmptyReply,
    HelloMsg,
    HelloReply,
    PingMsg,
    PongMsg,
    ShutdownMsg,
    StatusMsg,
    StatusReply,
)
from ..protocol.versions import versions
from .apps import Apps
from .base import Handler, Host, Request, Service
from .functions import Functions
from .queues import Queues
from .sandboxes import Sandboxes
from .web import Gateway

SHUTDOWN_DELAY_S = 0.05  # the reply goes out before the loop stops


class Status(Service):
    def __init__(self, host: Host, functions: Functions, apps: Apps, queues: Queues, sandboxes: Sandboxes,
                 gateway: Gateway) -> None:
        self.host = host
        self.gateway = gateway
        self.sandboxes = sandboxes
        self.functions = functions
        self.apps = apps
        self.queues = queues

    def handlers(self) -> dict[type[Message], Handler]:
        return {HelloMsg: self.on_hello, PingMsg: self.on_ping, StatusMsg: self.on_status,
                ShutdownMsg: self.on_shutdown}

    def on_hello(self, req: Request[HelloMsg]) -> HelloReply:
        return HelloReply(versions=versions(), runtime_id=self.host.runtime_id, shm=req.peer[0].shm,
                          gpus=self.functions.gpus.describe())

    def on_ping(self, req: Request[PingMsg]) -> PongMsg:
        return PongMsg(runtime_id=self.host.runtime_id)

    def on_status(self, req: Request[StatusMsg]) -> StatusReply:
        return StatusReply(runtime_id=self.host.runtime_id, pid=os.getpid(), endpoints=self.host.endpoints,
                           versions=versions(), **self.functions.stats(), apps=self.apps.stats(),
                           sessions=len(self.host.live_sessions()), stores=self.queues.stats(),
                           sandboxes=self.sandboxes.stats(), web=self.gateway.stats())

    def on_shutdown(self, req: Request[ShutdownMsg]) -> EmptyReply:
        asyncio.get_running_loop().call_later(SHUTDOWN_DELAY_S, self.host.stop)
        return EmptyReply()
