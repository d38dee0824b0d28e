"""The web gateway: one HTTP port of the runtime, each request an input of its endpoint's pool.

``Gateway`` serves HTTP with uvicorn on the daemon's own event loop (so a request reaches
its pool with no thread hand-off: pools are the loop's alone).  A function registered with
a ``web`` option (``@rc.fastapi_endpoint``, ``@rc.asgi_app``, ``@rc.wsgi_app``,
``@rc.web_server``; a class's ``web_methods``) is routed at ``/APP/LABEL/`` (the newest
registration of a label wins, as a re-run notebook cell's does).  A request there:

1. is refused at once, before any container starts, when no live pool serves that path (404),
   when its endpoint needs proxy auth and it has no valid token (401), or when its body passes
   the limit by its ``content-length`` (413);
2. becomes an ``Input`` of that pool whose caller is the request itself (``WebPeer``: a peer
   like a socket, named by the input id), whose ``web`` field is the head as text and whose
   one payload is the body's first part as raw bytes: it waits for a container slot as any call
   does (containers start from zero, ``max_inputs`` applies); the container pulls the rest of a
   long body as the app reads it (``pull`` / ``web_in`` ``body``), counted against the limit;
3. gets the container's ``web_out`` messages (routed by input id, as ``output`` is) as they
   come: the start, then each body chunk is written to the client at once; the input's
   ``result`` ends the response.  A failed input before any byte was sent is a plain status
   (500 for an error of the app, with its traceback in the runtime's log and never in the
   response; 502 for a container that died; 504 past the timeout; 503 when the app stopped),
   after a byte was sent the connection is cut.  A client that goes away, or stalls for
   ``IDLE_S``, cancels its input; one whose head is not whole within ``IDLE_S`` gets 408.

A websocket is one input too: the handshake waits for the app's ``accept``, then messages go
both ways (``web_out`` ``ws`` to the client, ``web_in`` straight to the input's container).
The gateway never unpickles: it reads message headers and passes body bytes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

from .. import web_tokens
from ..containers import ContainerRecord
from ..pools import Input, Pool
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Frame, Payload
from ..protocol.message import Message, encode
from ..protocol.messages.calls import CallMsg, ResultEntry
from ..protocol.messages.session import ErrorInfo
from ..protocol.messages.web import WebInMsg, WebOutMsg, WebRequest, WebSpec
from .base import ContainerHandler, Report, Service
from .functions import Functions
from .web_sockets import WebSockets

log = logging.getLogger("remotecell.runtime")

DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 8190  # taken (another runtime has it): a free port instead; the URLs name the one used
BODY_LIMIT_BYTES = 100 * 2**20  # Modal's request body limit
IDLE_ENV = "REMOTECELL_WEB_IDLE_TIMEOUT_S"  # a head not whole, a body not sent, or nothing read, this long
IDLE_S = 60.0
CREDIT_EVERY_BYTES = 1 << 20  # the container hears how much of a response was written at least this often
SESSION_HEADER = b"modal-session-id"  # Modal's: requests that carry the same one go to the same container
FIRST_BODY_BYTES = 1 << 20  # a body up to this goes with the request; the container pulls the rest part by part
ERROR_STATUS = {ErrorName.CRASHED: 502, ErrorName.TIMEOUT: 504, ErrorName.CANCELLED: 503,
                ErrorName.NOT_FOUND: 503}


class WebBindError(Exception):
    """The gateway cannot listen where it was told to."""


def parse_bind(bind: str | None) -> tuple[str, int, bool]:
    """``HOST:PORT`` (or None: the default) as host, port, and whether the port may move when taken."""
    if bind is None:
        return DEFAULT_WEB_HOST, DEFAULT_WEB_PORT, True
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise WebBindError(f"--web-bind {bind!r}: give HOST:PORT, e.g. 127.0.0.1:8190 (port 0: any free port)")
    return host.strip("[]"), int(port), False


def open_to_all(host: str, public: bool) -> bool:
    """Whether endpoints without ``requires_proxy_auth`` answer anyone: on loopback, or when told ``public``;
    a gateway bound beyond loopback asks every request for a token unless it is (``--web-public``)."""
    return public or host in ("localhost", "::1") or host.startswith("127.")


def listen(host: str, port: int, movable: bool) -> socket.socket:
    """A listening TCP socket on ``host:port``; on a free port instead when ``movable`` and it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without, a response's head and body in two writes wait out the
    # client's delayed ACK (Nagle), 40 ms a request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if not (movable and exc.errno == errno.EADDRINUSE):
                raise
            log.info("web gateway: port %d is taken, listening on a free one", port)
            sock.bind((host, 0))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise WebBindError(f"--web-bind {host}:{port}: {exc.strerror}; choose another port (0: any free one)") from None
    sock.setblocking(False)
    return sock


class Exchange:
    """One HTTP request in flight: what its container sent back, for the request's task to write."""

    __slots__ = ("events", "started", "length", "sent", "finished", "body_size", "left", "credited")

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self.started = False
        self.length: int | None = None  # the response's content-length, when it has one
        self.sent = 0  # body bytes written
        self.finished = False  # the last chunk went out: the result is still to come (a failure is only logged)
        self.body_size = 0  # request body bytes read so far
        self.credited = 0  # ``sent`` when the container was last told (``web_in`` credit)
        self.left: asyncio.Future[Any] = asyncio.get_running_loop().create_future()  # the client's leaving

    @property
    def complete(self) -> bool:
        """The whole body went out (by its content-length): the server says the client left, but it is done."""
        return self.length is not None and self.sent >= self.length


class WebPeer:
    """The caller of every web input: a peer as a socket is (``send(identity, frames)``), named by input id."""

    shm = False  # never shared memory: bodies are plain bytes
    local = False  # never a lease

    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}

    def send(self, identity: bytes, frames: list[Frame]) -> bool:
        exchange = self.exchanges.get(identity.decode())
        if exchange is None:  # the request is gone (its client left): drop what comes after
            return False
        header, payloads = framing.decode(frames)
        kind = header.get("t")
        if kind == "web_out":
            exchange.events.put_nowait(("out", header, payloads))
        elif kind == "result":
            exchange.events.put_nowait(("result", ResultEntry.from_wire(header), None))
        elif kind == "results":
            for entry in header.get("e") or []:
                exchange.events.put_nowait(("result", ResultEntry.from_wire(entry), None))
        elif kind == "output":
            text = str(header.get("text", "")).rstrip("\n")
            if text:
                log.info("web %s: %s", identity.decode(), text)
        return True


def _timed_h11(headers_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline on each request's head.

    uvicorn times out idle keep-alive connections, but any byte resets that clock, so a client
    that sends its head a byte at a time (slowloris) would hold a connection for ever.  Here a
    head must be whole within ``headers_timeout_s`` of the connection opening or of the last
    response ending; past it the client gets 408 (or, having sent nothing, is just closed).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11(H11Protocol):
        head_deadline: asyncio.TimerHandle | None = None
        head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_arrived()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self.head_bytes += len(data)
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a head was read (or the protocol switched)
                self._head_arrived()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._await_head()

        def _await_head(self) -> None:
            self._head_arrived()
            self.head_bytes = 0
            self.head_deadline = self.loop.call_later(headers_timeout_s, self._head_late)

        def _head_arrived(self) -> None:
            if self.head_deadline is not None:
                self.head_deadline.cancel()
                self.head_deadline = None

        def _head_late(self) -> None:
            self.head_deadline = None
            if self.transport.is_closing():
                return
            if self.head_bytes:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"
                                     b"connection: close\r\n\r\n")
            self.transport.close()

    return TimedH11


class _Server:
    """uvicorn's server on the daemon's loop, without its signal handlers (the daemon has its own)."""

    def __init__(self, app: Any, idle_s: float) -> None:
        import uvicorn

        class QuietServer(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, ws="auto",
                                http=_timed_h11(idle_s), timeout_keep_alive=30, server_header=False)
        self.server = QuietServer(config)
        self.task: asyncio.Future[None] | None = None

    def start(self, sock: socket.socket) -> None:
        self.task = asyncio.ensure_future(self.server.serve(sockets=[sock]))

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True


class Gateway(Service):
    """The routes of the web endpoints and the HTTP server in front of them."""

    def __init__(self, functions: Functions, bind: str | None, body_limit: int = BODY_LIMIT_BYTES,
                 public: bool = False) -> None:
        self.functions = functions
        self.body_limit = body_limit
        self.tokens = web_tokens.TokenCheck(functions.host.state_dir)
        host, port, movable = parse_bind(bind)
        self.open_to_all = open_to_all(host, public)
        self.idle_s = float(os.environ.get(IDLE_ENV, IDLE_S))
        self.sock = listen(host, port, movable)
        self.host, self.port = host, int(self.sock.getsockname()[1])
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        if ":" in url_host and not url_host.startswith("["):
            url_host = f"[{url_host}]"
        self.url = f"http://{url_host}:{self.port}"
        self.routes: dict[tuple[str, str], tuple[str, str | None]] = {}  # (app name, label) -> fid, method
        self.domains: dict[str, tuple[str, str]] = {}  # a custom domain -> (app name, label), served at its root
        self.peer = WebPeer()
        self.sockets = WebSockets(self)
        self.server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # watching the port for the first client (``start``)

    def start(self) -> None:
        """The port is bound (its URL known); uvicorn (~40 ms of imports) starts with the first route or client."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._serve)
        log.info("web gateway listening on %s", self.url)

    def _serve(self) -> None:
        if self.server is None and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self.server = _Server(self, self.idle_s)
            self.server.start(self.sock)  # it accepts what waits in the backlog

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()  # it closes the socket as it shuts down
            return
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def container_handlers(self) -> dict[type[Message], ContainerHandler]:
        return {WebOutMsg: self.on_web_out}

    def on_web_out(self, container: ContainerRecord, report: Report[WebOutMsg]) -> None:
        """Part of a response: to its request, as it came (routed by input id, as ``output`` is)."""
        pool = self.functions.input_pool.get(report.msg.id)
        inp = pool.inputs.get(report.msg.id) if pool is not None else None
        if inp is not None and inp.container is container:
            self.functions.send_peer(inp.peer, report.frames)

    # -- routes -------------------------------------------------------------------------------

    def route(self, app_name: str, fid: str, spec: WebSpec, method: str | None = None) -> str:
        """Serve ``fid`` (its ``method``, for a class) at ``/APP/LABEL/`` and at the root of its custom domains;
        its URL."""
        self.routes[(app_name, spec.label)] = (fid, method)
        for domain in spec.custom_domains:
            self.domains[domain.lower()] = (app_name, spec.label)
        self._serve()
        return self.url_of(app_name, spec.label)

    def url_of(self, app_name: str, label: str) -> str:
        return f"{self.url}/{app_name}/{label}/"

    def _pool(self, app_name: str, label: str) -> Pool | None:
        fid, _ = self.routes.get((app_name, label), ("", None))
        pool = self.functions.current_pool(fid) if fid else None
        if pool is None and fid and self.functions.pools.get(fid) is None:
            self.routes.pop((app_name, label), None)  # its app stopped long ago
        return pool

    def _spec(self, app_name: str, label: str, pool: Pool) -> tuple[str | None, WebSpec | None]:
        """The method a route names and its endpoint's spec."""
        method = self.routes.get((app_name, label), ("", None))[1]
        return method, pool.fn.opts.web_specs().get(method)

    def stats(self) -> dict[str, Any]:
        live = {f"{app}/{label}": self.url_of(app, label) for (app, label) in list(self.routes)
                if self._pool(app, label) is not None}
        domains = {domain: f"{app}/{label}" for domain, (app, label) in self.domains.items()
                   if f"{app}/{label}" in live}
        return {"url": self.url, "endpoints": live, "domains": domains}

    def _target(self, scope: dict[str, Any]) -> tuple[str, str, str]:
        """A request's app, label and root path: by its ``Host`` when that is an endpoint's custom domain (served
        at the domain's root), else by its path's first two segments."""
        host = (_header(scope, b"host") or b"").decode("latin-1").lower()
        routed = self.domains.get(host.rsplit(":", 1)[0] if not host.endswith("]") else host)
        if routed is not None:
            return routed[0], routed[1], ""
        parts = scope["path"].split("/", 3)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            return "", "", ""
        return parts[1], parts[2], f"/{parts[1]}/{parts[2]}"

    # -- HTTP ---------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        path: str = scope["path"]
        app_name, label, root = self._target(scope)
        pool = self._pool(app_name, label) if app_name and label else None
        if pool is not None and not self._admits(scope, self._spec(app_name, label, pool)[1]):
            log.info("web: refused a request to %s without a valid Modal-Key/Modal-Secret pair", path)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _plain(send, 401, "this endpoint needs proxy auth: send the headers Modal-Key and Modal-Secret "
                             "of a token from `remotecell web-token new NAME`")
            return
        if scope["type"] == "websocket":
            await self.sockets.relay(scope, pool, (app_name, label, root), receive, send)
            return
        if pool is None:
            await _plain(send, 404, f"no web endpoint at {path!r}: endpoints are served at /APP/LABEL/ (and at "
                         "the root of their custom_domains) while their app runs")
            return
        length = _content_length(scope)
        if length is not None and length > self.body_limit:
            await _plain(send, 413, f"the request body of {length} bytes passes the limit of {self.body_limit}")
            return
        try:
            first = await self._body(receive)
        except TimeoutError:
            await _plain(send, 408, f"the request body stalled: nothing came for {self.idle_s:g} s")
            return
        if first is None:
            await _plain(send, 413, f"the request body passes the limit of {self.body_limit} bytes")
            return
        if not isinstance(first, tuple):
            return  # the client left
        await self._exchange(scope, pool, (app_name, label, root), first, receive, send)

    def _admits(self, scope: dict[str, Any], spec: WebSpec | None) -> bool:
        """Whether the request may reach its endpoint: it needs no token, or it carries one that is not revoked."""
        if self.open_to_all and not (spec is not None and spec.requires_proxy_auth):
            return True
        key = secret = None
        for name, value in scope.get("headers", []):
            if name == b"modal-key":
                key = value.decode("latin-1")
            elif name == b"modal-secret":
                secret = value.decode("latin-1")
        return self.tokens.admits(key, secret)

    async def _body(self, receive: Any) -> tuple[bytes, bool] | bool | None:
        """The body's first part: all of it, or ``FIRST_BODY_BYTES`` and more to come (the container pulls the
        rest); None past the limit, False when the client went away."""
        chunks, size = [], 0
        while True:
            message = await asyncio.wait_for(receive(), self.idle_s)
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_limit:
                return None
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
            if not more or size >= FIRST_BODY_BYTES:
                return b"".join(chunks), more

    def submit(self, scope: dict[str, Any], pool: Pool, target: tuple[str, str, str], body: bytes,
                more_body: bool = False) -> tuple[str, Exchange]:
        """The request for ``target`` (app, label, root path) as an input of ``pool``: its id and the exchange
        its answers go to."""
        app_name, label, root = target
        input_id = f"web-{secrets.token_hex(8)}"
        path = scope["path"] or "/"
        request = WebRequest(
            type=scope["type"], subprotocols=list(scope.get("subprotocols") or []),
            method=scope.get("method", "GET"),
            path=path if not root or path.count("/") > 2 else path + "/",
            root_path=root, query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            headers=[[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])],
            client=list(scope["client"]) if scope.get("client") else None,
            server=list(scope["server"]) if scope.get("server") else None,
            scheme=scope.get("scheme", "http"), http_version=scope.get("http_version", "1.1"), more_body=more_body)
        exchange = self.peer.exchanges[input_id] = Exchange()
        exchange.body_size = len(body)
        payload = Payload([body])
        method = self._spec(app_name, label, pool)[0]
        frames = encode(CallMsg(id=input_id, fid=pool.fn.fid, method=method, web=request), [payload])
        inp = Input(input_id, (self.peer, input_id.encode()), payload, frames, method, web=request)
        session = _header(scope, SESSION_HEADER)
        inp.affinity = session.decode("latin-1") if session else None
        self.functions.input_pool[input_id] = pool
        pool.submit(inp)
        return input_id, exchange

    async def _exchange(self, scope: dict[str, Any], pool: Pool, target: tuple[str, str, str],
                        first: tuple[bytes, bool], receive: Any, send: Any) -> None:
        body, more = first
        input_id, exchange = self.submit(scope, pool, target, body, more)
        loop = asyncio.get_running_loop()
        # After the body, the next event is the client leaving; while the container pulls the body, none is read.
        exchange.left = loop.create_future() if more else asyncio.ensure_future(receive())
        try:
            await self._respond(exchange, pool, input_id, receive, send)
        except ConnectionAbortedError as exc:
            log.info("web %s: cut: %s", input_id, exc)
            pool.cancel(input_id)
            raise
        finally:
            self.peer.exchanges.pop(input_id, None)
            if not exchange.left.done():
                exchange.left.cancel()

    async def _respond(self, exchange: Exchange, pool: Pool, input_id: str, receive: Any, send: Any) -> None:
        events = exchange.events
        while True:
            got = asyncio.ensure_future(events.get())
            await asyncio.wait([got, exchange.left], return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                got.cancel()
                if exchange.complete:  # not gone: answered; the result is still to come
                    exchange.left = asyncio.get_running_loop().create_future()
                    continue
                log.info("web %s: the client went away: cancelled", input_id)
                pool.cancel(input_id)
                return
            kind, head, payloads = got.result()
            if kind == "out" and head.get("kind") == "pull":
                if not await self._pull(exchange, pool, input_id, receive, send):
                    return
                continue
            if kind == "out":
                if head.get("kind") == "start" and not exchange.started:
                    exchange.started = True
                    headers = [(str(k).encode("latin-1"), str(v).encode("latin-1"))
                               for k, v in head.get("headers") or []]
                    exchange.length = next((int(v) for k, v in headers if k.lower() == b"content-length"
                                            and v.isdigit()), None)
                    await send({"type": "http.response.start", "status": int(head.get("status", 200)),
                                "headers": headers})
                    if payloads:  # the first chunk came with the head (container/web.py)
                        await self._chunk(exchange, head, payloads, send, pool, input_id)
                elif head.get("kind") == "body" and exchange.started and not exchange.finished:
                    await self._chunk(exchange, head, payloads, send, pool, input_id)
                continue
            entry: ResultEntry = head
            if exchange.finished:
                if entry.status != "ok":
                    self.log_failure(input_id, pool, entry, entry.error or ErrorInfo(type="", message=""))
                return
            if entry.status == "ok" and exchange.started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            error = entry.error or ErrorInfo(type=ErrorName.INVALID, message="the endpoint sent no response")
            self.log_failure(input_id, pool, entry, error)
            if exchange.started:  # part of a response went out: cut it, so the client sees it is not whole
                raise ConnectionAbortedError(f"web {input_id}: {error.type}: {error.message}")
            status = ERROR_STATUS.get(error.type, 500) if entry.status != "cancelled" else 503  # type: ignore
            await _plain(send, status, _reason(status))
            return

    async def _pull(self, exchange: Exchange, pool: Pool, input_id: str, receive: Any, send: Any) -> bool:
        """The container asks for the body's next part: read it from the client and send it on (so a body
        goes no faster than the app reads it). False when the exchange ended here (the client left, or the
        body passed the limit)."""
        inp = pool.inputs.get(input_id)
        if inp is None or inp.container is None:
            return True  # it ended meanwhile: its result comes
        cid = inp.container.id
        try:
            message = await asyncio.wait_for(receive(), self.idle_s)
        except TimeoutError:
            self.functions.send_container(cid, encode(WebInMsg(id=input_id, kind="close")))
            pool.cancel(input_id)
            log.info("web %s: the request body stalled for %g s: cancelled", input_id, self.idle_s)
            if not exchange.started:
                await _plain(send, 408, f"the request body stalled: nothing came for {self.idle_s:g} s")
            return False
        if message["type"] == "http.disconnect":
            self.functions.send_container(cid, encode(WebInMsg(id=input_id, kind="close")))
            log.info("web %s: the client went away while sending its body: cancelled", input_id)
            pool.cancel(input_id)
            return False
        chunk = bytes(message.get("body", b""))
        exchange.body_size += len(chunk)
        if exchange.body_size > self.body_limit:
            self.functions.send_container(cid, encode(WebInMsg(id=input_id, kind="close")))
            pool.cancel(input_id)
            if not exchange.started:
                await _plain(send, 413, f"the request body passes the limit of {self.body_limit} bytes")
            return False
        more = bool(message.get("more_body", False))
        self.functions.send_container(cid, encode(WebInMsg(id=input_id, kind="body", more=more), [Payload([chunk])]))
        if not more:
            exchange.left = asyncio.ensure_future(receive())
        return True

    async def _chunk(self, exchange: Exchange, head: dict[str, Any], payloads: list[Payload], send: Any,
                     pool: Pool, input_id: str) -> None:
        chunk = b"".join(bytes(framing.buffer_of(f)) for p in payloads for f in p.frames)
        exchange.sent += len(chunk)
        more = bool(head.get("more"))
        exchange.finished = not more
        try:  # a client that reads nothing holds the send (uvicorn's flow control): not for ever
            await asyncio.wait_for(send({"type": "http.response.body", "body": chunk, "more_body": more}), self.idle_s)
        except TimeoutError:
            raise ConnectionAbortedError(f"the client read nothing for {self.idle_s:g} s") from None
        if more and exchange.sent - exchange.credited >= CREDIT_EVERY_BYTES:
            inp = pool.inputs.get(input_id)
            if inp is not None and inp.container is not None:
                exchange.credited = exchange.sent
                self.functions.send_container(inp.container.id,
                                              encode(WebInMsg(id=input_id, kind="credit", written=exchange.sent)))

    def log_failure(self, input_id: str, pool: Pool, entry: ResultEntry, error: ErrorInfo) -> None:
        if entry.status == "ok":
            log.warning("web %s of %s: the app returned without a response", input_id, pool.fn.name)
        else:
            log.warning("web %s of %s failed: %s: %s\n%s", input_id, pool.fn.name, error.type, error.message,
                        error.traceback)


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The first value of header ``name`` (ASGI servers give names lowercased)."""
    return next((value for key, value in scope.get("headers", []) if key == name), None)


def _content_length(scope: dict[str, Any]) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _reason(status: int) -> str:
    return {500: "Internal Server Error", 502: "Bad Gateway: the endpoint's container died",
            503: "Service Unavailable: the endpoint's app stopped", 504: "Gateway Timeout"}.get(status, "error")


async def _plain(send: Any, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
