"""Websockets through the web gateway: one input per websocket, messages both ways.

The handshake waits for the app's ``accept`` (a ``web_out`` of the input), which the gateway
answers to the client; then the app's messages come as ``web_out`` ``ws`` (text or bytes) and
are sent on, while the client's go as ``web_in`` straight to the container that runs the input
(nothing can come before the accept, so none waits for a container), and its leaving as
``web_in`` ``close``.  The input's result ends it (a failure closes with 1011).  Nothing is
unpickled here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ..pools import Pool
from ..protocol import framing
from ..protocol.framing import Payload
from ..protocol.message import encode
from ..protocol.messages.calls import ResultEntry
from ..protocol.messages.session import ErrorInfo
from ..protocol.messages.web import WebInMsg
from .functions import Functions

log = logging.getLogger("remotecell.runtime")


class Relaying(Protocol):
    """What a websocket needs of the gateway (``web.Gateway``): its input made, its answers' queue, logging."""

    functions: Functions
    peer: Any  # web.WebPeer: ``exchanges`` by input id

    def submit(self, scope: dict[str, Any], pool: Pool, target: tuple[str, str, str], body: bytes,
               more_body: bool = False) -> tuple[str, Any]: ...

    def log_failure(self, input_id: str, pool: Pool, entry: ResultEntry, error: ErrorInfo) -> None: ...


class WebSockets:
    """The gateway's websockets: each relayed between its client and its input's container."""

    def __init__(self, gateway: Relaying) -> None:
        self.gateway = gateway

    async def relay(self, scope: dict[str, Any], pool: Pool | None, target: tuple[str, str, str], receive: Any,
                    send: Any) -> None:
        """A websocket: the handshake waits for the app's ``accept``; then messages both ways until one side
        closes; the input's result ends it."""
        if (await receive())["type"] != "websocket.connect":
            return
        if pool is None:
            log.info("web: no endpoint for the websocket at %r", scope["path"])
            await send({"type": "websocket.close", "code": 1008})  # (before accept: uvicorn answers 403)
            return
        input_id, exchange = self.gateway.submit(scope, pool, target, b"")
        pump: asyncio.Future[None] | None = None
        closed = False
        try:
            while True:
                kind, head, payloads = await exchange.events.get()
                if kind == "result":
                    entry: ResultEntry = head
                    if entry.status != "ok":
                        self.gateway.log_failure(input_id, pool, entry, entry.error or ErrorInfo(type="", message=""))
                    if not closed:
                        await send({"type": "websocket.close", "code": 1000 if entry.status == "ok" else 1011})
                    return
                what = head.get("kind")
                if what == "accept" and pump is None:
                    headers = [(str(k).encode("latin-1"), str(v).encode("latin-1"))
                               for k, v in head.get("headers") or []]
                    await send({"type": "websocket.accept", "subprotocol": head.get("subprotocol"),
                                "headers": headers})
                    pump = asyncio.ensure_future(self._pump(input_id, pool, receive))
                elif what == "ws" and not closed:
                    data = b"".join(bytes(framing.buffer_of(f)) for p in payloads for f in p.frames)
                    await send({"type": "websocket.send", "text": data.decode()} if head.get("text")
                               else {"type": "websocket.send", "bytes": data})
                elif what == "close" and not closed:
                    closed = True
                    await send({"type": "websocket.close", "code": int(head.get("code", 1000)),
                                "reason": str(head.get("reason") or "")})
        finally:
            self.gateway.peer.exchanges.pop(input_id, None)
            if pump is not None and not pump.done():
                pump.cancel()

    async def _pump(self, input_id: str, pool: Pool, receive: Any) -> None:
        """What the websocket's client sends, to the container that runs its input, in order."""
        while True:
            message = await receive()
            inp = pool.inputs.get(input_id)
            if inp is None or inp.container is None:
                return
            if message["type"] == "websocket.receive":
                text = message.get("text")
                data = text.encode() if text is not None else bytes(message.get("bytes") or b"")
                frames = encode(WebInMsg(id=input_id, kind="ws", text=text is not None), [Payload([data])])
                self.gateway.functions.send_container(inp.container.id, frames)
            elif message["type"] == "websocket.disconnect":
                frames = encode(WebInMsg(id=input_id, kind="close", code=int(message.get("code", 1000))))
                self.gateway.functions.send_container(inp.container.id, frames)
                return
