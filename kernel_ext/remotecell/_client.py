"""The connection to the runtime: sockets, request ids, replies, heartbeats.

Blocking calls use a DEALER socket of their own thread (a blocking poll: no
thread hand-off on the hot path); ``.aio`` calls use one asyncio DEALER per
event loop with a reader task that routes replies by request id.  Both speak
the same messages and share how replies turn into values or exceptions.

Socket lifecycle (the invariants): at most ``MAX_THREAD_CHANNELS`` threads hold
a blocking channel at once; the blocking calls of threads past that share the
background loop's channel (``BridgedChannel``: one socket, a thread hop per
call). A thread's channel, with its leases' sockets, is closed when the thread
ends; a loop's async channel when the loop is closed (a private loop of
``_bridge`` when its thread ends; any other loop is noticed at the next
``async_channel()``). So sockets are bounded and come back when their users go.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import itertools
import linecache
import os
import secrets
import sys
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from typing import Any, Protocol, TypeVar, cast

import zmq
import zmq.asyncio
from remotecell_runtime.protocol import framing, pickling, sharedmem
from remotecell_runtime.protocol.framing import Frame, Payload
from remotecell_runtime.protocol.message import Message
from remotecell_runtime.protocol.messages.calls import CallMsg, CallsMsg, CancelMsg, OutputMsg, ResultEntry
from remotecell_runtime.protocol.messages.session import ErrorInfo, ErrorReply, HelloMsg, HelloReply
from remotecell_runtime.protocol.stream import StreamClosed, StreamConn, client_path
from remotecell_runtime.protocol.versions import versions

from . import _bridge, _cache_note, _local, _post_mortem, exceptions
from ._watch import HELLO_TIMEOUT_S, RuntimeWatch

WAKE_MS = 1000  # how often a waiting call looks at the heartbeat
# Threads that hold a blocking channel (one socket, and one per lease) at once; zmq allows 1,023
# sockets per context, and each costs an fd here and one in the daemon.
MAX_THREAD_CHANNELS = int(os.environ.get("REMOTECELL_MAX_THREAD_CHANNELS", "64"))
# What the runtime says of leases: granted, taken back (the container ran none of the holder's
# calls since), or lost (the container died, maybe under one of them).
LEASE_NEWS = ("lease", "lease_ended", "lease_lost")

OutputSink = Callable[[str, str], None]  # (stream name, text)
Deliver = Callable[[dict[str, Any], list[Payload]], None]  # takes the reply to one request

R = TypeVar("R", bound=Message)

_CONNECTION: Connection | None = None
_CONNECTION_LOCK = threading.Lock()


def connection() -> Connection:
    """This process's connection to its runtime, made on first use."""
    global _CONNECTION
    with _CONNECTION_LOCK:
        if _CONNECTION is None or _CONNECTION.closed:
            _CONNECTION = Connection(_local.resolve())
        return _CONNECTION


def reset_connection() -> None:
    """Forget the current connection (tests, or after `remotecell stop`)."""
    global _CONNECTION
    with _CONNECTION_LOCK:
        if _CONNECTION is not None:
            _CONNECTION.close()
        _CONNECTION = None


# While ``rc.enable_output()`` is on (``remotecell run``): input id -> its function's name, so what each input
# prints shows whose it is (``[square 3f2a...-7] text``); None when off (then nothing is recorded or prefixed).
LABELS: dict[str, str] | None = None
LABELS_KEPT = 100_000


def _output_enabled() -> bool:
    return LABELS is not None


_cache_note.output_enabled = _output_enabled


def label(input_id: str, name: str) -> None:
    """Remember whose input ``input_id`` is, while output is enabled (one branch when it is not)."""
    labels = LABELS
    if labels is None:
        return
    labels[input_id] = name
    if len(labels) > LABELS_KEPT:
        del labels[next(iter(labels))]


def prefixed(who: str, text: str) -> str:
    """``text`` with ``[who] `` before each of its lines."""
    return "".join(f"[{who}] {line}" for line in text.splitlines(keepends=True))


def write_output(stream: str, text: str) -> None:
    target = sys.stderr if stream == "stderr" else sys.stdout
    target.write(text)
    target.flush()


def output_here() -> OutputSink:
    """The default sink, bound to the caller's context (contextvars).

    Output then lands where the call was made even when it arrives later on
    another thread or task: in a notebook, the cell that made the call (ipykernel
    keeps the current cell in a context variable), not the cell running by then.
    """
    context = contextvars.copy_context()

    def sink(stream: str, text: str) -> None:
        context.run(write_output, stream, text)

    return sink


def result_value(header: dict[str, Any], payloads: list[Payload], name: str | None = None) -> Any:
    """The value a result message carries, or raise the error it reports; one from the result cache is noted
    (``_cache_note``; ``name``: the function's, when the header's id is not the input's)."""
    result = ResultEntry.from_wire(header)
    if result.cached or _cache_note.pending:
        _cache_note.seen(header, name)
    if result.status == "ok":
        return pickling.deserialize(payloads[0])
    if result.status == "cancelled":
        raise exceptions.InputCancelled(f"input {result.id} was cancelled")
    raise error_from(result.error, payloads)


def error_from(error: ErrorInfo | None, payloads: list[Payload]) -> BaseException:
    """The exception an ``error`` reply or a failed result reports (the pickled one when it came along)."""
    error = error or ErrorInfo(type="Error", message="")
    type_name, message = error.type, error.message
    tb = format_frames(error.frames, type_name, message) if error.frames else error.traceback
    tb = tb.removeprefix("Traceback (most recent call last):\n")
    exc: BaseException | None = None
    if payloads:
        try:
            exc = pickling.deserialize(payloads[0])
        except Exception:
            exc = None
        if not isinstance(exc, BaseException):
            exc = None
    if exc is None:
        runtime_cls = exceptions.BY_NAME.get(type_name)
        exc = runtime_cls(message) if runtime_cls is not None else exceptions.RemoteError(type_name, message, tb)
    if tb and not isinstance(exc, exceptions.RemoteError) and hasattr(exc, "add_note"):
        exc.add_note("\nRemote traceback (most recent call last):\n" + tb.rstrip())
    files = tuple(dict.fromkeys(str(frame[0]) for frame in error.frames if frame))
    _post_mortem.mark(exc, error.debug, error.debug_hold_s, f"{type_name}: {message}", files)
    return exc


def format_frames(frames: list[list[Any]], type_name: str, message: str) -> str:
    """A remote traceback, with source lines from this side's files where it has them."""
    lines = []
    for filename, lineno, name, remote_line in frames:
        lines.append(f'  File "{filename}", line {lineno}, in {name}')
        source = linecache.getline(filename, lineno).strip() or remote_line
        if source:
            lines.append(f"    {source}")
    lines.append(f"{type_name}: {message}")
    return "\n".join(lines) + "\n"


class Connection:
    def __init__(self, info: _local.ConnectionInfo) -> None:
        self.info = info
        self.sid = secrets.token_hex(6)
        self._ids = itertools.count()
        self.ctx = zmq.Context()
        self.closed = False
        self._local = threading.local()
        self._async: dict[asyncio.AbstractEventLoop, AsyncChannel] = {}  # under _lock
        self._sockets: list[zmq.Socket] = []
        self._direct: list[StreamConn] = []  # connections to leased containers
        self._lock = threading.Lock()
        self._thread_channels = 0  # live SyncChannels, under _lock
        self._bridged = BridgedChannel(self)
        _bridge.when_loop_closes(self._loop_closed)
        # Told (on the thread that saw it) when the runtime restarted: apps register themselves again.
        self.on_restart: weakref.WeakSet[Any] = weakref.WeakSet()
        self.runtime_id: str = ""  # the runtime process we talk to; a new one means it restarted
        self.watch = RuntimeWatch(self)
        try:
            reply = HelloReply.from_wire(self._hello())
            self.runtime_versions: dict[str, str] = reply.versions
            self.runtime_id = reply.runtime_id
            check_versions(versions(), self.runtime_versions, info.address)
        except BaseException:
            self.close()  # a half-made connection must not leave sockets that block term()
            raise
        self.shm = reply.shm and sharedmem.ShmPool.available()
        self.watch.start()
        atexit.register(self.close)

    def _hello(self) -> dict[str, Any]:
        """The first request; over tcp:// a socket monitor tells a refused key from a dead runtime."""
        header = HelloMsg(versions=versions()).to_wire()
        if self.info.is_local:
            return self.request(header, timeout_s=HELLO_TIMEOUT_S)
        channel = self.channel()
        assert isinstance(channel, SyncChannel), "the first channel of a connection is its thread's own"
        assert isinstance(channel.wire, ZmqWire), "a tcp:// runtime is reached through ZeroMQ"
        sock = channel.wire.sock
        failures = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        monitor = sock.get_monitor_socket(failures)
        try:
            header.update(id=self.new_id(), sid=self.sid)
            framing.send(sock, framing.encode(header))
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            ready = dict(poller.poll(int(HELLO_TIMEOUT_S * 1000)))
            if monitor in ready:
                raise exceptions.AuthError(
                    f"the runtime at {self.info.address} refused this client's key: the token was revoked, "
                    "or it belongs to another runtime. Ask for a new one (`remotecell token new NAME`)"
                )
            if sock not in ready:
                raise exceptions.ConnectionError(
                    f"the runtime at {self.info.address} did not answer within {HELLO_TIMEOUT_S:g} s"
                )
            reply, payloads = framing.decode(framing.recv(sock))
            _check_reply(reply, payloads)
            return reply
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)

    def new_id(self) -> str:
        return f"{self.sid}-{next(self._ids)}"

    def new_socket(self, ctx: zmq.Context | None = None) -> zmq.Socket:
        sock = (ctx or self.ctx).socket(zmq.DEALER)
        sock.linger = 1000
        sock.sndhwm = sock.rcvhwm = 0
        if not self.info.is_local:
            if not (self.info.server_key and self.info.client_public and self.info.client_secret):
                raise exceptions.AuthError(
                    f"{self.info.address} is a tcp:// runtime: it needs a token. Create one on the runtime host "
                    "with `remotecell token new NAME` and point REMOTECELL_RUNTIME at the file it writes"
                )
            sock.curve_serverkey = self.info.server_key.encode()
            sock.curve_publickey = (self.info.client_public or "").encode()
            sock.curve_secretkey = (self.info.client_secret or "").encode()
        sock.connect(self.info.address)
        with self._lock:
            self._sockets.append(sock)
        return sock

    def direct_conn(self, path: str) -> StreamConn | None:
        """A connection to a leased container's own Unix socket (see ``_invocation.ThreadLeases``); None when
        nothing listens there (the container is gone: the runtime says so on the channel)."""
        try:
            conn = StreamConn.connect(path, WAKE_MS)
        except OSError:
            return None
        with self._lock:
            self._direct.append(conn)
        return conn

    def close_direct(self, conn: StreamConn) -> None:
        with self._lock:
            if conn in self._direct:
                self._direct.remove(conn)
        conn.close()

    def close_socket(self, sock: zmq.Socket) -> None:
        with self._lock:
            if sock in self._sockets:
                self._sockets.remove(sock)
        sock.close()  # with its own linger: a thread's last message (a cancel, say) still goes out

    # -- blocking ----------------------------------------------------------------------------

    def channel(self) -> SyncChannel | BridgedChannel:
        """This thread's blocking channel, made on first use; the shared one past ``MAX_THREAD_CHANNELS``."""
        slot = getattr(self._local, "slot", None)
        if slot is not None:
            return slot.channel
        with self._lock:
            if self._thread_channels >= MAX_THREAD_CHANNELS:
                return self._bridged
            self._thread_channels += 1
        try:
            wire = self._new_wire()
        except BaseException:
            self._channel_closed()
            raise
        ch = SyncChannel(self, wire)
        self._local.slot = slot = _ThreadSlot(ch)
        weakref.finalize(slot, ch.close)  # the thread ended: its local storage, and so the slot, is gone
        return ch

    def _new_wire(self) -> ZmqWire | StreamWire:
        """A thread's own way to the runtime: a Unix stream connection to a local one (one thread woken per
        hop instead of three, see the runtime's ``listeners``), else a DEALER."""
        if self.info.is_local:
            conn = self.stream_conn()
            if conn is None and self.info.embedded and self.watch.revive(self.runtime_id):
                conn = self.stream_conn()  # it had crashed: this thread's first request goes to the new one
            if conn is not None:
                return StreamWire(self, conn)
        sock = self.new_socket()
        sock.rcvtimeo = WAKE_MS
        return ZmqWire(sock)

    def stream_conn(self) -> StreamConn | None:
        """A new stream connection to the local runtime; None when nothing listens there (a runtime without the
        stream socket, or none right now)."""
        return self.direct_conn(client_path(self.info.address))

    def _channel_closed(self) -> None:
        with self._lock:
            self._thread_channels -= 1

    def request(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
                timeout_s: float | None = 30.0) -> dict[str, Any]:
        """One request, one reply (control messages); raise the error it reports."""
        header.setdefault("id", self.new_id())
        header["sid"] = self.sid
        return self._control(header, payloads, timeout_s)

    def envelope(self, msg: Message) -> dict[str, Any]:
        """The header of request ``msg`` from this session, under a new request id."""
        header = msg.to_wire()
        header["id"] = self.new_id()
        header["sid"] = self.sid
        return header

    def ask(self, msg: Message, answer: type[R], payloads: list[Payload] | tuple[()] = (),
            timeout_s: float | None = 30.0, on_output: OutputSink | None = None) -> R:
        """One request, its reply read as ``answer``; raise the error it reports.  ``output`` messages of the
        request (an image build's log) go to ``on_output``, else to this process's streams.

        Example::

            status = conn.ask(StatusMsg(), StatusReply)
        """
        return answer.from_wire(self._control(self.envelope(msg), payloads, timeout_s, on_output))

    def _control(self, header: dict[str, Any], payloads: list[Payload] | tuple[()], timeout_s: float | None,
                 on_output: OutputSink | None = None) -> dict[str, Any]:
        """A control request's reply; sent once more when the local runtime had crashed (it was started again)."""
        try:
            reply, _ = self.channel().roundtrip(header, payloads, on_output, timeout_s)
        except NotSent:
            reply, _ = self.channel().roundtrip(header, payloads, on_output, timeout_s)
        return reply

    async def ask_aio(self, msg: Message, answer: type[R],
                      payloads: list[Payload] | tuple[()] = ()) -> tuple[R, list[Payload]]:
        """The ``.aio`` twin of ``ask``, with the reply's payloads."""
        reply, reply_payloads = await self.async_channel().roundtrip(self.envelope(msg), payloads)
        return answer.from_wire(reply), reply_payloads

    # -- async --------------------------------------------------------------------------------

    def async_channel(self) -> AsyncChannel:
        loop = asyncio.get_running_loop()
        ch = self._async.get(loop)
        if ch is None:
            with self._lock:
                closed = [other for other in self._async if other.is_closed()]
                gone = [self._async.pop(other) for other in closed]
            for old in gone:  # loops closed since (asyncio.run ended): their sockets go now
                self.close_socket(old.sock)
            ch = AsyncChannel(self)
            with self._lock:
                self._async[loop] = ch
        return ch

    def _loop_closed(self, loop: asyncio.AbstractEventLoop) -> None:
        """A private loop of ``_bridge`` closes (its thread ended): so does its channel's socket."""
        with self._lock:
            ch = self._async.pop(loop, None)
        if ch is not None:
            self.close_socket(ch.sock)

    async def arequest(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = ()) -> dict[str, Any]:
        header.setdefault("id", self.new_id())
        header["sid"] = self.sid
        reply, _ = await self.async_channel().roundtrip(header, payloads)
        return reply

    def stop_async_channel(self) -> None:
        """Stop the running loop's channel (its reader and watchdog tasks) before a close() on another thread."""
        with self._lock:
            ch = self._async.pop(asyncio.get_running_loop(), None)
        if ch is not None:
            ch.stop()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.watch.stop()
        with self._lock:
            sockets, self._sockets = self._sockets, []
            direct, self._direct = self._direct, []
        for conn in direct:
            conn.close()
        # Every socket must be closed before term(), or term() blocks for ever; the asyncio
        # ones belong to shadow contexts that destroy() would not see, so close them all here.
        for sock in sockets:
            sock.close(linger=200)
        self.ctx.destroy(linger=200)


def _check_reply(header: dict[str, Any], payloads: list[Payload]) -> None:
    if header.get("t") == "error":
        raise error_from(ErrorReply.from_wire(header).error, payloads)


def replies(header: dict[str, Any], payloads: list[Payload]) -> list[framing.Entry]:
    """The replies one message carries: many results travel in one ``results`` message."""
    if header.get("t") != "results":
        return [(header, payloads)]
    entries = framing.split_many(header, payloads)
    for entry, _ in entries:
        entry["t"] = "result"  # each is a result on its own now (the entries are this message's own dicts)
    return entries


class _ThreadSlot:
    """A thread's channel, in that thread's local storage: it goes when the thread ends."""

    def __init__(self, channel: SyncChannel) -> None:
        self.channel = channel


def cancel_header(conn: Connection, ids: list[str], cid: str | None = None) -> dict[str, Any]:
    return dict(CancelMsg(ids=ids, cid=cid).to_wire(), sid=conn.sid)


def write_to(on_output: OutputSink | None, header: dict[str, Any]) -> None:
    """An ``output`` message, to where its call's output goes (``on_output``; else this process's streams)."""
    out = OutputMsg.from_wire(header)
    text = out.text
    if LABELS is not None and out.stream != "display":
        text = prefixed(f"{LABELS.get(out.id, '?')} {out.id}", text)
    (on_output or write_output)(out.stream, text)


class LeaseHolder(Protocol):
    """Who keeps a channel's leases (``_invocation.ThreadLeases``): it hears the runtime's lease news."""

    def news(self, header: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ZmqWire:
    """A thread's DEALER to the runtime (a remote one, or a local one without a stream socket)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        # zmq_poll with no wait, not sock.get(EVENTS): that makes a pyzmq enum per call, ~1 us of a warm call
        self._poll = [(sock, zmq.POLLIN)]

    def send(self, frames: list[Frame]) -> bool:
        """True: queued (a DEALER delivers it once the runtime is there)."""
        framing.send(self.sock, frames)
        return True

    def recv(self) -> list[Any]:
        """The next message; TimeoutError after ``WAKE_MS`` without one."""
        try:
            return framing.recv(self.sock)
        except zmq.Again:
            raise TimeoutError from None

    def readable(self) -> bool:
        return bool(zmq.zmq_poll(self._poll, 0))

    def close(self, conn: Connection) -> None:
        conn.close_socket(self.sock)


class StreamWire:
    """A thread's Unix stream connection to a local runtime.

    The runtime closes its end only when it stops or crashes. A wait that finds it closed hears
    ``StreamClosed`` once (its caller asks the connection what became of the runtime); a send that
    finds it closed connects again and sends there (to a runtime started since), or says it could
    not deliver.
    """

    def __init__(self, owner: Connection, conn: StreamConn) -> None:
        self.owner = owner
        self.conn: StreamConn | None = conn

    def send(self, frames: list[Frame]) -> bool:
        """True when the runtime got the message; False when no runtime listens (nothing was sent)."""
        for _ in range(2):  # on this connection, else on a new one
            if self.conn is None:
                self.conn = self.owner.stream_conn()
                if self.conn is None:
                    return False
            try:
                self.conn.send(frames)
                return True
            except (StreamClosed, TimeoutError):
                self._drop()
        return False

    def recv(self) -> list[Any]:
        """The next message; TimeoutError after ``WAKE_MS`` without one, StreamClosed when the runtime closed
        the connection (then a wait of ``WAKE_MS`` and TimeoutError, until a send connects again)."""
        if self.conn is None:
            time.sleep(WAKE_MS / 1000)  # nothing will come: the caller looks at the heartbeat at this pace
            raise TimeoutError
        try:
            return self.conn.recv()
        except StreamClosed:
            self._drop()
            raise

    def readable(self) -> bool:
        return self.conn is not None and self.conn.readable()

    def _drop(self) -> None:
        if self.conn is not None:
            self.owner.close_direct(self.conn)
            self.conn = None

    def close(self, conn: Connection) -> None:
        self._drop()


class NotSent(exceptions.RuntimeRestarted):
    """The local runtime had crashed before this request could reach it; it was started again and the
    request never ran: send it again (its function's id is new: resolve it again)."""


class SyncChannel:
    """A blocking request/response wire owned by one thread, and who keeps the leases that thread holds."""

    def __init__(self, conn: Connection, wire: ZmqWire | StreamWire) -> None:
        self.conn = conn
        self.wire = wire
        self.holder: LeaseHolder | None = None  # made by the first call that may bring a lease

    def close(self) -> None:
        """Its thread ended: close its wire and its leases' (called by a finalizer, on any thread)."""
        if self.holder is not None:
            self.holder.close()
        self.wire.close(self.conn)
        self.conn._channel_closed()

    def cancel(self, ids: list[str]) -> None:
        self.wire.send(framing.encode(cancel_header(self.conn, ids)))

    def roundtrip(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
                  on_output: OutputSink | None = None, timeout_s: float | None = None,
                  ) -> tuple[dict[str, Any], list[Payload]]:
        """Send one request and wait for its reply (``result``, ``reply`` or ``error``)."""
        for reply in self.stream(header, payloads, on_output, timeout_s):
            return reply
        raise AssertionError("unreachable: stream() ends with the reply")

    def stream(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
               on_output: OutputSink | None = None, timeout_s: float | None = None,
               ) -> Generator[tuple[dict[str, Any], list[Payload]]]:
        """Send one request; yield the ``item`` messages it makes (a generator's), then its reply."""
        runtime_id = self.conn.runtime_id
        self.send(framing.encode(header, payloads), runtime_id)
        return self.replies_to(header["id"], on_output, timeout_s, runtime_id)

    def send(self, frames: list[Frame], runtime_id: str) -> None:
        """Send a request; ``NotSent`` when the local runtime had crashed (it is started again).

        With no runtime there that this client may start, the request is lost as a DEALER's is
        when its runtime is gone: the wait for its reply ends as the heartbeat says.
        """
        if not self.wire.send(frames) and self.conn.watch.revive(runtime_id):
            raise NotSent(f"the local runtime at {self.conn.info.address} had crashed: it was started again and "
                          "the request was not sent")

    def replies_to(self, request_id: str, on_output: OutputSink | None, timeout_s: float | None, runtime_id: str,
                 ) -> Generator[tuple[dict[str, Any], list[Payload]]]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                frames = self.wire.recv()  # its timeout wakes us to look at the heartbeat
            except StreamClosed:
                if self.conn.watch.lost_runtime(runtime_id):
                    raise exceptions.RuntimeRestarted(
                        f"the local runtime at {self.conn.info.address} crashed while this request waited for it "
                        "(it was started again); the request was lost with it") from None
                continue
            except TimeoutError:
                self._check_waiting(deadline, timeout_s)
                self.conn.watch.check_restart(runtime_id)
                continue
            for reply, reply_payloads in replies(*framing.decode(frames)):
                if reply["t"] in LEASE_NEWS:
                    if self.holder is not None:
                        self.holder.news(reply)
                elif reply.get("id") != request_id:
                    sharedmem.discard(reply_payloads)  # a late reply to a call this thread gave up on
                elif reply["t"] == "output":
                    write_to(on_output, reply)
                elif reply["t"] == "item":
                    yield reply, reply_payloads
                else:
                    _check_reply(reply, reply_payloads)
                    yield reply, reply_payloads
                    return

    def _check_waiting(self, deadline: float | None, timeout_s: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise exceptions.ConnectionError(
                f"the runtime at {self.conn.info.address} did not answer within {timeout_s:g} s: it is down, "
                "or it refused this client's key (check the token in REMOTECELL_RUNTIME)"
            )
        self.conn.watch.check_alive()

class AsyncChannel:
    """One asyncio DEALER per event loop; a reader task routes replies by request id."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.ctx = zmq.asyncio.Context.shadow(conn.ctx)
        self.sock = cast(zmq.asyncio.Socket, conn.new_socket(self.ctx))
        self.waiting: dict[str, tuple[Deliver, OutputSink | None]] = {}  # request id -> who takes its reply
        self.reader = asyncio.ensure_future(self._read())
        # The reader lives as long as its loop; a blocking caller's private loop is simply dropped
        # at exit with the reader still waiting, which is fine: don't warn about it.
        self.reader._log_destroy_pending = False  # type: ignore[attr-defined]
        # Calls made in one turn of the loop, by (fid, method, shm): they leave together, many to a message.
        self._outgoing: dict[tuple[str, Any, bool], list[framing.Entry]] = {}
        self._flush_handle: asyncio.Handle | None = None
        # whoever waits here, to be failed if the runtime stops answering or restarts meanwhile
        self._watched: dict[int, tuple[Callable[[BaseException], None], str]] = {}
        self._watch_keys = itertools.count()
        self._watchdog: asyncio.Future[None] | None = None

    def stop(self) -> None:
        """Stop reading and watching: the socket is about to close (called on the channel's loop)."""
        self.reader.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            try:
                messages = replies(*framing.decode(frames))
            except framing.WireError:
                continue
            for header, payloads in messages:
                self._route(header, payloads)

    def _route(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        entry = self.waiting.get(header.get("id", ""))
        if entry is None:
            sharedmem.discard(payloads)
            return
        deliver, on_output = entry
        if header["t"] == "output":
            write_to(on_output, header)
        else:
            deliver(header, payloads)

    def watch(self, fail: Callable[[BaseException], None]) -> Callable[[], None]:
        """Have ``fail`` called if the runtime stops answering or restarts while its caller waits.

        One watchdog task checks for every waiter here (no timer per call); returns the unwatch.
        """
        key = next(self._watch_keys)
        self._watched[key] = (fail, self.conn.runtime_id)
        if self._watchdog is None:
            self._watchdog = asyncio.ensure_future(self._watch())
            self._watchdog._log_destroy_pending = False  # type: ignore[attr-defined]  # as the reader

        def unwatch() -> None:
            self._watched.pop(key, None)

        return unwatch

    def _expect(self, request_id: str, on_output: OutputSink | None,
                ) -> asyncio.Future[tuple[dict[str, Any], list[Payload]]]:
        """A future for the reply to ``request_id``, watched, forgotten here once it is done."""
        future: asyncio.Future[tuple[dict[str, Any], list[Payload]]] = asyncio.get_running_loop().create_future()

        def deliver(reply: dict[str, Any], reply_payloads: list[Payload]) -> None:
            if not future.done():
                future.set_result((reply, reply_payloads))

        def fail(exc: BaseException) -> None:
            if not future.done():
                future.set_exception(exc)

        self.waiting[request_id] = (deliver, on_output or output_here())
        unwatch = self.watch(fail)

        def forget(_: asyncio.Future[Any]) -> None:
            self.waiting.pop(request_id, None)
            unwatch()

        future.add_done_callback(forget)
        return future

    async def roundtrip(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
                        on_output: OutputSink | None = None) -> tuple[dict[str, Any], list[Payload]]:
        future = self._expect(header["id"], on_output)
        try:
            await self.sock.send_multipart(framing.encode(header, payloads), copy=False)
        except BaseException:
            future.cancel()
            raise
        reply, reply_payloads = await future
        _check_reply(reply, reply_payloads)
        return reply, reply_payloads

    async def call(self, msg: CallMsg, sid: str, payload: Payload,
                   on_output: OutputSink | None = None) -> tuple[dict[str, Any], list[Payload]]:
        """One input of a function, from session ``sid``; its result message.

        Calls made by many tasks in the same turn of the event loop are sent together
        after it, as one ``calls`` message per function (one call alone goes as ``call``).
        """
        input_id = msg.id
        future = self._expect(input_id, on_output)
        key = (msg.fid, msg.method, msg.shm)
        self._outgoing.setdefault(key, []).append(({"id": input_id}, [payload]))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush, sid)
        try:
            reply, reply_payloads = await future
        except asyncio.CancelledError:
            unsent = self._outgoing.get(key)
            if unsent:  # cancelled in the same turn: it never leaves
                self._outgoing[key] = [e for e in unsent if e[0]["id"] != input_id]
            raise
        _check_reply(reply, reply_payloads)
        return reply, reply_payloads

    def _flush(self, sid: str) -> None:
        self._flush_handle = None
        outgoing, self._outgoing = self._outgoing, {}
        for (fid, method, shm), entries in outgoing.items():
            if len(entries) == 1:  # alone: a plain call, which the runtime forwards untouched
                (head, payloads), = entries
                call = CallMsg(id=head["id"], fid=fid, method=method, shm=shm)
                frames = framing.encode(dict(call.to_wire(), sid=sid), payloads)
            else:
                message_id = self.conn.new_id()  # a refused message comes back under this id
                self.waiting[message_id] = (functools.partial(self._refused, [h["id"] for h, _ in entries]), None)
                fields = CallsMsg(entries=[], fid=fid, method=method, shm=shm).fields()
                del fields["e"]  # encode_many writes the entries
                frames = framing.encode_many("calls", entries, id=message_id, sid=sid, **fields)
            self.sock.send_multipart(frames, copy=False)  # never blocks: no high-water mark

    def _refused(self, input_ids: list[str], header: dict[str, Any], payloads: list[Payload]) -> None:
        self.waiting.pop(str(header.get("id")), None)
        for input_id in input_ids:
            entry = self.waiting.get(input_id)
            if entry is not None:
                entry[0](dict(header, id=input_id), payloads)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WAKE_MS / 1000)
            for key, (fail, runtime_id) in list(self._watched.items()):
                try:
                    self.conn.watch.check_alive()
                    self.conn.watch.check_restart(runtime_id)
                except exceptions.Error as exc:
                    self._watched.pop(key, None)
                    fail(exc)

    async def send(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = ()) -> None:
        await self.sock.send_multipart(framing.encode(header, payloads), copy=False)

    async def stream(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
                     on_output: OutputSink | None = None) -> AsyncGenerator[tuple[dict[str, Any], list[Payload]]]:
        """Send one request; yield the ``item`` messages it makes (a generator's), then its reply."""
        arrived: asyncio.Queue[Any] = asyncio.Queue()  # replies, or the error that ends the wait
        self.waiting[header["id"]] = (lambda h, p: arrived.put_nowait((h, p)), on_output or output_here())
        unwatch = self.watch(arrived.put_nowait)
        try:
            await self.send(header, payloads)
            while True:
                got = await arrived.get()
                if isinstance(got, BaseException):
                    raise got
                reply, reply_payloads = got
                if reply["t"] != "item":
                    _check_reply(reply, reply_payloads)
                    yield reply, reply_payloads
                    return
                yield reply, reply_payloads
        finally:
            unwatch()
            self.waiting.pop(header["id"], None)


class BridgedChannel:
    """The blocking requests of threads past ``MAX_THREAD_CHANNELS``, on the background loop's channel.

    One socket for all of them (a thread hop per request rather than a socket per thread),
    and no leases: their calls go through the runtime (``_invocation.call``).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def roundtrip(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
                  on_output: OutputSink | None = None, timeout_s: float | None = None,
                  ) -> tuple[dict[str, Any], list[Payload]]:
        return _bridge.run_in_background(self._roundtrip(header, payloads, on_output, timeout_s))

    async def _roundtrip(self, header: dict[str, Any], payloads: list[Payload] | tuple[()],
                         on_output: OutputSink | None, timeout_s: float | None,
                         ) -> tuple[dict[str, Any], list[Payload]]:
        try:
            return await asyncio.wait_for(self.conn.async_channel().roundtrip(header, payloads, on_output),
                                          timeout_s)
        except asyncio.TimeoutError:
            raise exceptions.ConnectionError(
                f"the runtime at {self.conn.info.address} did not answer within {timeout_s:g} s: it is down, "
                "or it refused this client's key (check the token in REMOTECELL_RUNTIME)"
            ) from None

    def stream(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = (),
               on_output: OutputSink | None = None, timeout_s: float | None = None,
               ) -> Generator[tuple[dict[str, Any], list[Payload]]]:
        async def replies() -> AsyncIterator[tuple[dict[str, Any], list[Payload]]]:
            async for reply in self.conn.async_channel().stream(header, payloads, on_output):
                yield reply

        return _bridge.iterate(replies(), _bridge.run_in_background)

    def cancel(self, ids: list[str]) -> None:
        async def send() -> None:
            await self.conn.async_channel().send(cancel_header(self.conn, ids))

        _bridge.run_in_background(send())


def check_versions(mine: dict[str, str], theirs: dict[str, str], address: str) -> None:
    """Code travels by value: the runtime must unpickle what this client pickles."""
    problems = []
    if mine["python"].split(".")[:2] != theirs.get("python", "").split(".")[:2]:
        problems.append(f"Python {theirs.get('python')} there, {mine['python']} here")
    for name in ("cloudpickle", "remotecell"):
        if mine[name] != theirs.get(name):
            problems.append(f"{name} {theirs.get(name)} there, {mine[name]} here")
    if problems:
        raise exceptions.VersionMismatchError(
            f"the runtime at {address} cannot run code shipped from this client: " + "; ".join(problems)
            + ". Install the same versions on both sides (same Python minor version; "
            "`pip install remotecell==X cloudpickle==Y`), or restart a local runtime with `remotecell stop`."
        )
