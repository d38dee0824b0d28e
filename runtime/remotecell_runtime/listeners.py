"""The daemon's sockets on its event loop: ZeroMQ ROUTERs, and local clients over a Unix stream socket.

Both hand each message to ``on_message(listener, identity, frames)`` and, once a read's
messages are handled, call ``drained()``; both answer through ``send(identity, frames)``.
A ROUTER (``Listener``) serves every client of an endpoint, told apart by identity.  A
stream connection (``StreamPeer``) is one client thread's own: a local client's blocking
calls go over it because a round trip through ZeroMQ wakes the I/O threads of both sides
as well (on the machines measured, a stream round trip costs about half as much).

Invariants: the event loop never blocks on a peer: a stream peer's send takes what the
kernel takes now and queues the rest (written as the peer reads); a peer that sends what is
not a message, or goes away, is closed and forgotten, and sends to it are dropped.  The
stream socket lives in the runtime's private socket folder (0600): whoever can connect to it
could reach the ipc:// ROUTER beside it as well.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
from collections.abc import Callable

import zmq

from .protocol import framing, stream
from .protocol.framing import Frame, WireError
from .protocol.stream import StreamClosed, StreamConn

log = logging.getLogger("remotecell.runtime")

# Plain ints: pyzmq's enum members cost a microsecond an operation, a few times per message here.
EVENTS, POLLIN, NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
DRAIN_MAX = 1000  # messages handled in one go before other work gets a turn

OnMessage = Callable[["Listener | StreamPeer", bytes, list[Frame]], None]


class Listener:
    """A zmq ROUTER driven by the event loop's reader callbacks (no per-message futures).

    ``drained`` runs after each read of the socket, once the messages it brought are handled
    (the services write what those changed in one go: see ``Service.drained``).
    """

    def __init__(self, sock: zmq.Socket, on_message: OnMessage, drained: Callable[[], None], shm: bool,
                 local: bool = True) -> None:
        self.sock = sock
        self.on_message = on_message
        self.drained = drained
        self.shm = shm  # peers here share our host: large buffers may go through shared memory
        self.local = local  # peers here reach our private socket folder (ipc://): they may hold leases
        self._drain_scheduled = False
        self.loop = asyncio.get_running_loop()
        self.fd = int(sock.getsockopt(zmq.FD))
        self.loop.add_reader(self.fd, self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock = self.sock
        # Checking EVENTS is cheaper than a recv that raises zmq.Again.
        try:
            for _ in range(DRAIN_MAX):
                if not int(sock.get(EVENTS)) & POLLIN:
                    return
                frames = framing.recv(sock, NOBLOCK)
                self.on_message(self, frames[0].bytes, frames[1:])
            self._schedule_drain()
        finally:
            self.drained()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def send(self, identity: bytes, frames: list[Frame]) -> bool:
        try:
            framing.send(self.sock, [identity, *frames], NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: that peer is gone
            log.debug("could not send to %r: %s", identity, exc)
            return False
        finally:
            # A send can consume the FD's edge: if input is queued, read it.
            if int(self.sock.get(EVENTS)) & POLLIN:
                self._schedule_drain()
        return True

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.sock.close(linger=0)


class StreamListener:
    """Accepts local clients' stream connections at ``path``; each becomes a ``StreamPeer``."""

    def __init__(self, path: str, on_message: OnMessage, drained: Callable[[], None], shm: bool) -> None:
        self.path = path
        self.on_message = on_message
        self.drained = drained
        self.shm = shm
        self.peers: dict[int, StreamPeer] = {}
        self._ids = itertools.count()
        if os.path.exists(path):  # a runtime that died left it (the state folder's lock says none other runs)
            os.unlink(path)
        self.sock = stream.listen(path)
        os.chmod(path, 0o600)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(DRAIN_MAX):
            conn = stream.accept(self.sock)
            if conn is None:
                return
            conn.sock.setblocking(False)
            peer = StreamPeer(self, conn, f"stream-{next(self._ids)}".encode())
            self.peers[conn.fileno()] = peer

    def forget(self, peer: StreamPeer) -> None:
        self.peers.pop(peer.fd, None)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        for peer in list(self.peers.values()):
            peer.close()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class StreamPeer:
    """One local client thread's connection: its messages in, its replies and news out."""

    local = True  # it reached the private socket folder

    def __init__(self, listener: StreamListener, conn: StreamConn, identity: bytes) -> None:
        self.listener = listener
        self.conn = conn
        self.identity = identity
        self.shm = listener.shm
        self.fd = conn.fileno()
        self.closed = False
        self._out: collections.deque[memoryview] = collections.deque()  # what the kernel did not take yet
        listener.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            messages = self.conn.recv_ready()
        except (StreamClosed, OSError):
            self.close()
            return
        except WireError as exc:
            log.warning("closed a local client's connection: %s", exc)
            self.close()
            return
        if not messages:
            return
        try:
            for frames in messages:
                self.listener.on_message(self, self.identity, frames)
        finally:
            self.listener.drained()

    def send(self, identity: bytes, frames: list[Frame]) -> bool:
        """Queue one message; False when the connection is gone."""
        if self.closed:
            return False
        buffers, total = stream.message_buffers(frames)
        if self._out:  # behind what is queued already
            self._out.extend(memoryview(b).cast("B") for b in buffers)
            return True
        try:
            sent = self.conn.sock.sendmsg(buffers)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            log.debug("could not send to a local client: %s", exc)
            self.close()
            return False
        if sent < total:
            self._queue_rest(buffers, sent)
        return True

    def _queue_rest(self, buffers: list[object], sent: int) -> None:
        for buf in buffers:
            view = memoryview(buf).cast("B")  # type: ignore[arg-type]  # every frame is a buffer
            if sent >= view.nbytes:
                sent -= view.nbytes
                continue
            self._out.append(view[sent:])
            sent = 0
        self.listener.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        while self._out:
            try:
                sent = self.conn.sock.sendmsg(list(itertools.islice(self._out, 64)))
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            while sent and self._out:
                head = self._out[0]
                if sent >= head.nbytes:
                    sent -= head.nbytes
                    self._out.popleft()
                else:
                    self._out[0] = head[sent:]
                    sent = 0
        self.listener.loop.remove_writer(self.fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.listener.loop
        loop.remove_reader(self.fd)
        if self._out:
            loop.remove_writer(self.fd)
            self._out.clear()
        self.listener.forget(self)
        self.conn.close()
