"""A web endpoint in its container: the user's ASGI app, built once at load, and each request run through it.

``build_app`` makes the app from the function and its ``WebSpec``: for ``fastapi`` a
FastAPI app with the function as its one route (``/``, the spec's method; CORS open, as
Modal's; ``/docs`` when asked), for ``asgi`` what the function returns, for ``wsgi`` what
it returns behind a2wsgi's adapter (the WSGI app runs on a2wsgi's threads), for
``web_server`` a ``PortRelay`` to the port the function's server listens on.  An app that
speaks the ASGI lifespan protocol is started on the container's event loop at load (its
startup handlers run once per container) and shut down at exit.

``WebApp.handle`` runs one request (a ``call`` with ``web``) as a task on that loop: the
scope from the ``WebRequest``, the body from the input's one raw payload (the rest of a long
one pulled from the gateway as the app reads it), and every message the app sends goes back
as a ``web_out`` at once (the head held until the first chunk, to go as one message), so a
streaming response reaches the client chunk by chunk.  A websocket runs the same way, its
client's messages arriving as ``web_in`` (``deliver``, from the I/O thread).  An exception of
the app is the input's error (the gateway answers 500 when nothing was sent yet, and logs the
traceback).  Nothing here is pickled: the request and the response are bytes and text.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol import framing
from ..protocol.framing import Payload
from ..protocol.messages.web import WebInMsg, WebOutMsg, WebRequest, WebSpec
from .outbox import Outbox

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]
ASGI = {"version": "3.0", "spec_version": "2.3"}
WINDOW_BYTES = 4 << 20  # response bytes a request may have out before the gateway says it wrote them


class Credit:
    """A response's flow control: bytes sent, bytes the gateway said it wrote to the client."""

    __slots__ = ("sent", "written", "moved")

    def __init__(self) -> None:
        self.sent = 0
        self.written = 0
        self.moved = asyncio.Event()

    async def spend(self, n: int) -> None:
        """Count ``n`` bytes sent; wait while more than ``WINDOW_BYTES`` are not written yet (a slow client)."""
        self.sent += n
        while self.sent - self.written > WINDOW_BYTES:
            self.moved.clear()
            await self.moved.wait()


def build_app(target: Callable[..., Any], spec: WebSpec, loop: asyncio.AbstractEventLoop) -> Any:
    """The ASGI app of endpoint ``target`` as ``spec`` says (built on the calling thread)."""
    if spec.kind == "fastapi":
        from fastapi import FastAPI
        from fastapi.middleware.cors import CORSMiddleware

        app = FastAPI(docs_url="/docs" if spec.docs else None, redoc_url=None,
                      openapi_url="/openapi.json" if spec.docs else None)
        app.add_api_route("/", target, methods=[spec.method])
        app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                           allow_credentials=True)
        return app
    made = target()
    if spec.kind == "web_server":
        _wait_for_port(spec.port, spec.startup_timeout_s, getattr(target, "__name__", "the function"))
        return PortRelay(spec.port)
    if inspect.isawaitable(made):
        made = asyncio.run_coroutine_threadsafe(_awaited(made), loop).result()
    if spec.kind == "wsgi":
        from a2wsgi import WSGIMiddleware

        if not callable(made):
            raise TypeError(f"@rc.wsgi_app {getattr(target, '__name__', target)} must return a WSGI app (a "
                            f"callable such as a Flask app), got {type(made).__name__}")
        return WSGIMiddleware(made)
    if not callable(made):
        raise TypeError(f"@rc.asgi_app {getattr(target, '__name__', target)} must return an ASGI app (such as a "
                        f"FastAPI or Starlette app), got {type(made).__name__}")
    return made


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _wait_for_port(port: int, timeout_s: float, name: str) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; TimeoutError after ``timeout_s``."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"@rc.web_server {name}: nothing listens on port {port} after {timeout_s:g} s "
                                   "(start the server in the function, or raise startup_timeout=)") from None
            time.sleep(0.02)


HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
              b"proxy-connection", b"host"}


class PortRelay:
    """``@rc.web_server``: an ASGI app that relays each request to the server on 127.0.0.1:``port`` (httpx),
    the response's chunks streamed back as they come."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")  # (the lifespan protocol is skipped)
        import httpx

        if self.client is None:
            self.client = httpx.AsyncClient(timeout=None, follow_redirects=False)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"][len(scope["root_path"]):] or "/"
        url = httpx.URL(f"http://127.0.0.1:{self.port}", path=path, query=scope["query_string"])
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        request = self.client.build_request(scope["method"], url, headers=headers, content=b"".join(chunks))
        response = await self.client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A websocket relayed to the server's own (websockets' client): accepted once the server accepted."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        await receive()  # websocket.connect
        path = scope["path"][len(scope["root_path"]):] or "/"
        query = scope["query_string"].decode("latin-1")
        uri = f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")
        try:
            upstream = await connect(uri, subprotocols=scope.get("subprotocols") or None, proxy=None,
                                     compression=None, max_size=None, ping_interval=None)
        except Exception as exc:
            print(f"web_server: websocket {path} refused by the server on port {self.port}: {exc}", file=sys.stderr)
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def down() -> None:  # the server's messages to the client
            try:
                async for message in upstream:
                    await send({"type": "websocket.send", "text": message} if isinstance(message, str)
                               else {"type": "websocket.send", "bytes": bytes(message)})
            except ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": code if code != 1005 else 1000,
                        "reason": upstream.close_reason or ""})

        async def up() -> None:  # the client's to the server
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close()
                    return
                if message.get("text") is not None:
                    await upstream.send(message["text"])
                else:
                    await upstream.send(bytes(message.get("bytes") or b""))

        tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()


class WebApp:
    """The loaded endpoint: its ASGI app, its lifespan state, and the requests it runs."""

    def __init__(self, app: Any, outbox: Outbox, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.outbox = outbox
        self.loop = loop
        self.state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None
        self.inboxes: dict[str, asyncio.Queue[dict[str, Any]]] = {}  # websocket input id -> what its client sent
        self.http_inboxes: dict[str, asyncio.Queue[dict[str, Any]]] = {}  # request id -> its body's pulled parts
        self.credits: dict[str, Credit] = {}  # request id -> its response's flow control

    async def start(self) -> None:
        """Run the app's lifespan startup, when it speaks the protocol (else go on without, as uvicorn's auto)."""
        self._lifespan = _Lifespan(self.app, self.state)
        await self._lifespan.startup()

    async def stop(self) -> None:
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    async def handle(self, msg: Any, payloads: list[Payload]) -> None:
        """Run one HTTP request (``msg.web``, the body in ``payloads[0]``) through the app."""
        request: WebRequest = msg.web
        if request.type == "websocket":
            await self._websocket(msg.id, request)
            return
        body = b"".join(bytes(framing.buffer_of(f)) for f in payloads[0].frames) if payloads else b""
        scope = {
            "type": "http", "asgi": ASGI, "http_version": request.http_version, "method": request.method,
            "scheme": request.scheme, "path": request.path, "raw_path": request.path.encode(),
            "root_path": request.root_path, "query_string": request.query.encode("latin-1"),
            "headers": [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in request.headers],
            "client": tuple(request.client) if request.client else None,
            "server": tuple(request.server) if request.server else None,
            "state": dict(self.state),
        }
        input_id = msg.id
        sent_body = False
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        outbox = self.outbox
        held: list[WebOutMsg] = []  # the head, until the first chunk (one message) or the loop's turn ends
        credit = self.credits[input_id] = Credit()

        def flush_head() -> None:
            if held:
                outbox.send(held.pop())

        more_body = request.more_body
        inbox: asyncio.Queue[dict[str, Any]] | None = None
        if more_body:  # the rest of the body is pulled from the gateway, part by part, as the app reads it
            inbox = self.http_inboxes[input_id] = asyncio.Queue()

        async def receive() -> dict[str, Any]:
            nonlocal sent_body, more_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": more_body}
            if more_body and inbox is not None:
                outbox.send(WebOutMsg(id=input_id, kind="pull"))
                message = await inbox.get()
                more_body = message["type"] == "http.request" and message["more_body"]
                return message
            await done  # the request has no more body: the next event is the end of the exchange
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                headers = [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")]
                           for k, v in message.get("headers") or []]
                held.append(WebOutMsg(id=input_id, kind="start", status=int(message["status"]), headers=headers))
                loop.call_soon(flush_head)
            elif kind == "http.response.body":
                chunk = bytes(message.get("body") or b"")
                more = bool(message.get("more_body", False))
                if held:  # head and first chunk in one message: one hop, one write
                    head = held.pop()
                    head.more = more
                    outbox.send(head, [Payload([chunk])])
                elif chunk or not more:
                    outbox.send(WebOutMsg(id=input_id, kind="body", more=more), [Payload([chunk])])
                if more:
                    await credit.spend(len(chunk))  # a client that reads slowly slows the app down, not memory

        try:
            await self.app(scope, receive, send)
        finally:
            if not done.done():
                done.set_result(None)
            self.http_inboxes.pop(input_id, None)
            self.credits.pop(input_id, None)

    async def _websocket(self, input_id: str, request: WebRequest) -> None:
        """One websocket: ``connect``, then what its client sends (``web_in``, see ``deliver``) until it leaves."""
        scheme = "wss" if request.scheme == "https" else "ws"
        scope = {
            "type": "websocket", "asgi": ASGI, "http_version": request.http_version, "scheme": scheme,
            "path": request.path, "raw_path": request.path.encode(), "root_path": request.root_path,
            "query_string": request.query.encode("latin-1"),
            "headers": [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in request.headers],
            "client": tuple(request.client) if request.client else None,
            "server": tuple(request.server) if request.server else None,
            "subprotocols": list(request.subprotocols), "state": dict(self.state),
        }
        inbox = self.inboxes[input_id] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        outbox = self.outbox

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                headers = [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")]
                           for k, v in message.get("headers") or []]
                outbox.send(WebOutMsg(id=input_id, kind="accept", headers=headers,
                                      subprotocol=message.get("subprotocol")))
            elif kind == "websocket.send":
                text = message.get("text")
                data = text.encode() if text is not None else bytes(message.get("bytes") or b"")
                outbox.send(WebOutMsg(id=input_id, kind="ws", text=text is not None), [Payload([data])])
            elif kind == "websocket.close":
                outbox.send(WebOutMsg(id=input_id, kind="close", code=int(message.get("code", 1000)),
                                      reason=str(message.get("reason") or "")))

        try:
            await self.app(scope, inbox.get, send)
        finally:
            self.inboxes.pop(input_id, None)

    def deliver(self, msg: WebInMsg, payloads: list[Payload]) -> None:
        """On the I/O thread: a websocket client's message (or its leaving) to its input's task."""
        data = b"".join(bytes(framing.buffer_of(f)) for p in payloads for f in p.frames)
        self.loop.call_soon_threadsafe(self._deliver, msg, data)

    def _deliver(self, msg: WebInMsg, data: bytes) -> None:
        if msg.kind == "credit":
            credit = self.credits.get(msg.id)
            if credit is not None:
                credit.written = max(credit.written, msg.written)
                credit.moved.set()
            return
        pulled = self.http_inboxes.get(msg.id)
        if pulled is not None:
            pulled.put_nowait({"type": "http.request", "body": data, "more_body": msg.more} if msg.kind == "body"
                              else {"type": "http.disconnect"})
            return
        inbox = self.inboxes.get(msg.id)
        if inbox is None:
            return  # it ended meanwhile
        if msg.kind == "ws":
            inbox.put_nowait({"type": "websocket.receive", "text": data.decode()} if msg.text
                             else {"type": "websocket.receive", "bytes": data})
        else:
            inbox.put_nowait({"type": "websocket.disconnect", "code": msg.code})


class _Lifespan:
    """The ASGI lifespan protocol for one app: startup at load, shutdown at exit; skipped if the app refuses it."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        self.stopped = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        await asyncio.wait([self.task, self.started], return_when=asyncio.FIRST_COMPLETED)
        if self.started.done() and self.started.result() is not None:
            raise RuntimeError(f"the web app's startup failed: {self.started.result()}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done() or not self.started.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait([self.task, self.stopped], timeout=10, return_when=asyncio.FIRST_COMPLETED)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException:
            if not self.started.done():  # an app that does not speak lifespan: it raised at once
                self.task = None
                return
            raise

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" and not self.started.done():
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed" and not self.started.done():
            self.started.set_result(message.get("message") or "startup failed")
        elif kind.startswith("lifespan.shutdown") and not self.stopped.done():
            self.stopped.set_result(None)
