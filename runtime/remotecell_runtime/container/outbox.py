"""A container's sockets and how anything reaches them: one I/O thread sends, other threads hand it their messages.

The DEALER to the daemon and the Unix socket a leaseholder's direct calls arrive on
(``direct``, listening; None when it could not be bound; see ``protocol.stream``) are
used by the I/O thread only (a zmq socket is not thread-safe, nor is a connection's
read buffer).  ``send`` from another thread, and ``on_io`` work, go
through a queue and a wake-up pipe that the serve loop drains.  A message about an
input in ``direct_peers`` goes to that leaseholder, any other to the daemon.
``results`` holds the I/O thread's results not sent yet; ``flush_results`` sends them
as one ``results`` message.
"""

from __future__ import annotations

import _socket
import functools
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..protocol import framing, stream
from ..protocol.framing import Frame, Payload
from ..protocol.message import Message
from ..protocol.messages.calls import ResultEntry
from ..protocol.stream import StreamClosed, StreamConn


class Outbox:
    """The container's sockets, and the queue that hands other threads' messages to the I/O thread."""

    def __init__(self, ctx: zmq.Context, address: str, container_id: str, direct_address: str | None,
                 curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.identity = container_id.encode()
        self.sock.linger = 2000
        if curve is not None:  # tcp:// to a daemon on another host: (its public key, ours, our secret)
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(address)
        self.direct = _listen_direct(direct_address) if direct_address else None  # the leaseholders connect here
        self.direct_address = direct_address if self.direct is not None else None
        self.direct_peers: dict[str, StreamConn] = {}  # input id -> the leaseholder connection it came on
        self.peer_lost: Callable[[StreamConn], None] = lambda conn: None  # a send to it failed (DirectLease sets)
        self.io_thread = threading.get_ident()
        # frames for the daemon, or work for the I/O thread (a message to a leaseholder among them)
        self.queue: queue.SimpleQueue[list[Frame] | Callable[[], None]] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.results: list[tuple[ResultEntry, list[Payload]]] = []  # inline results not sent yet

    def send(self, msg: Message, payloads: list[Payload] | tuple[()] = ()) -> None:
        """To the daemon, or to the leaseholder when it is about one of its direct calls; from any thread."""
        # Messages about one input (result, output, item) carry its id.
        peer = self.direct_peers.get(getattr(msg, "id", "")) if self.direct_peers else None
        if threading.get_ident() == self.io_thread:
            if peer is None:
                framing.send(self.sock, framing.encode(msg.to_wire(), payloads))
            else:
                self.to_peer(peer, msg, payloads)
            return
        if peer is None:
            self.queue.put(framing.encode(msg.to_wire(), payloads))
        else:
            self.queue.put(functools.partial(self.to_peer, peer, msg, payloads))
        os.write(self.wake_w, b"x")

    def to_peer(self, peer: StreamConn, msg: Message, payloads: list[Payload] | tuple[()] = ()) -> None:
        """On the I/O thread: ``msg`` to the leaseholder ``peer`` (a direct call's result, ``revoked``).

        The direct hop's one frame for a message and its small payloads.  A holder that went away (or
        stopped reading) loses the connection; nobody else waits for what it would have read.
        """
        try:
            peer.send(framing.encode(msg.to_wire(), payloads, inline=True))
        except (StreamClosed, TimeoutError, OSError):
            self.peer_lost(peer)

    def drain(self) -> None:
        """On the I/O thread: send what other threads queued, and run the work they handed it."""
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if callable(item):  # work handed to this thread (see on_io)
                item()
            else:
                framing.send(self.sock, item)

    def on_io(self, work: Callable[..., None], *args: Any) -> None:
        """Run ``work(*args)`` on the I/O thread: what it reports there goes out many results to a message."""
        if threading.get_ident() == self.io_thread:
            work(*args)
            return
        self.queue.put(functools.partial(work, *args))
        os.write(self.wake_w, b"x")

    def flush_results(self) -> None:
        if not self.results:  # e.g. the backlog's last input was a direct call, answered already
            return
        results, self.results = self.results, []
        framing.send(self.sock, framing.encode_many("results", [(r.fields(), own) for r, own in results]))


def _listen_direct(path: str) -> _socket.socket | None:
    try:
        return stream.listen(path)
    except OSError as exc:  # e.g. a socket path too long: serve through the daemon only
        print(f"remotecell container: no direct socket at {path}: {exc}", file=sys.__stderr__)
        return None
