"""Whole messages over a Unix stream socket: the direct hop between a leaseholder and its container.

A leased call is one message each way between two processes on one host.  Through
ZeroMQ that hop wakes three threads each way (the sender's I/O thread, the
receiver's, then the receiver); a stream socket wakes the receiver alone, which
takes a round trip on the machines measured from ~70 µs to ~17 µs.  Everything
else (the daemon's sockets) stays on ZeroMQ.

A message is its frames (those of ``framing.encode``: on this hop mostly one inline
frame) after a prefix: the frame count (u32), then each frame's length (u64), little
endian.  ``StreamConn.recv`` returns whole messages only; what a read brings beyond
one message stays buffered for the next.

Invariants: nothing here unpickles; a prefix that announces more than ``MAX_FRAMES``
frames or ``MAX_MESSAGE_BYTES`` in all is a ``WireError`` (the connection cannot be
read on after one, so its owner closes it).  A read that times out loses nothing: a
message half read stays buffered until the rest comes.
"""

from __future__ import annotations

import _socket  # not ``socket``: its enums and ``selectors`` cost a container's start ~2.5 ms
import select
import struct
from collections.abc import Sequence
from typing import Any

from .framing import Frame, WireError

MAX_FRAMES = 1024
MAX_MESSAGE_BYTES = 1 << 36  # 64 GiB: a bound on what a peer can make us allocate, not a size anyone sends
READ_BYTES = 1 << 16  # what one read asks for while the message's size is not known yet
_COUNT = struct.Struct("<I")
_ONE = struct.Struct("<IQ")  # the prefix of a message of one frame, the direct hop's usual
_TIMEVAL = struct.Struct("@ll")


class StreamClosed(ConnectionError):
    """The peer closed the connection (or it broke)."""


class StreamConn:
    """One end of a direct connection; used by one thread at a time.

    Example::

        conn = StreamConn.connect("/run/sock/c1.sock", timeout_ms=1000)
        conn.send(framing.encode(header, payloads, inline=True))
        frames = conn.recv()  # TimeoutError when nothing came within timeout_ms
    """

    def __init__(self, sock: _socket.socket, timeout_ms: int | None = None) -> None:
        sock.setblocking(True)  # timeouts are the kernel's (SO_RCVTIMEO): one syscall a read, not a poll first
        self.sock = sock
        self._buf = bytearray(READ_BYTES)
        self._start = self._end = 0  # what is read and not yet returned: _buf[_start:_end]
        self.timeout_ms: int | None = None
        self.set_timeout(timeout_ms)
        self._poll: select.poll | None = None  # made by the first ``readable``

    @classmethod
    def connect(cls, path: str, timeout_ms: int | None = None) -> StreamConn:
        """A connection to the socket at ``path``; ``OSError`` when nothing listens there."""
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock, timeout_ms)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def set_timeout(self, timeout_ms: int | None, send_timeout_ms: int | None = None) -> None:
        """How long ``recv`` waits for data (None: for ever); ``send_timeout_ms`` bounds a blocked send."""
        if timeout_ms != self.timeout_ms:
            self.timeout_ms = timeout_ms
            self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, _timeval(timeout_ms))
        if send_timeout_ms is not None:
            self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _timeval(send_timeout_ms))

    def send(self, frames: Sequence[Frame]) -> None:
        """One message; blocks until the kernel took all of it (``TimeoutError`` past the send timeout)."""
        buffers, total = message_buffers(frames)
        try:
            sent = self.sock.sendmsg(buffers)
            if sent < total:  # a large message: the rest as the peer reads it
                self._send_rest(buffers, sent)
        except BlockingIOError:
            raise TimeoutError("the peer did not read the message in time") from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise StreamClosed(str(exc)) from None

    def _send_rest(self, buffers: list[Any], sent: int) -> None:
        for buf in buffers:
            view = memoryview(buf).cast("B")
            if sent >= view.nbytes:
                sent -= view.nbytes
                continue
            self.sock.sendall(view[sent:])
            sent = 0

    def pending(self) -> bool:
        """Whether bytes of a next message are buffered already (then ``recv`` may not need to wait)."""
        return self._end > self._start

    def readable(self) -> bool:
        """Whether a message (or part of one) waits: buffered here, or in the kernel."""
        if self._end > self._start:
            return True
        if self._poll is None:  # poll, not select: a client with a thousand threads has fds past FD_SETSIZE
            self._poll = select.poll()
            self._poll.register(self.sock, select.POLLIN)
        return bool(self._poll.poll(0))

    def recv_ready(self) -> list[list[Any]]:
        """The whole messages one read of a non-blocking socket brought (maybe none: the rest stays buffered).

        For an event loop's reader callback; ``StreamClosed`` when the peer is gone.
        """
        try:
            self._read()
        except TimeoutError:  # BlockingIOError: woken with nothing to read
            pass
        messages = []
        while (frames := self._take()) is not None:
            messages.append(frames)
        return messages

    def recv(self) -> list[Any]:
        """The next whole message's frames (bytes; a large frame a memoryview of its own buffer).

        ``TimeoutError`` when it has not all come within the timeout (what came stays buffered),
        ``StreamClosed`` when the peer is gone, ``WireError`` for a prefix no peer of ours sends.
        """
        while True:
            frames = self._take()
            if frames is not None:
                return frames
            self._read()

    def _read(self) -> None:
        if self._end == len(self._buf):
            self._make_room(READ_BYTES)
        try:
            n = self.sock.recv_into(memoryview(self._buf)[self._end:])
        except BlockingIOError:  # SO_RCVTIMEO passed
            raise TimeoutError("nothing came within the timeout") from None
        except ConnectionResetError as exc:
            raise StreamClosed(str(exc)) from None
        if n == 0:
            raise StreamClosed("the peer closed the connection")
        self._end += n

    def _take(self) -> list[Any] | None:
        """The buffered message's frames once it is whole; else None, with room made for the rest of it."""
        buf, start, have = self._buf, self._start, self._end - self._start
        if have < 4:
            return None
        (count,) = _COUNT.unpack_from(buf, start)
        if not 1 <= count <= MAX_FRAMES:
            raise WireError(f"a direct message of {count} frames (1 to {MAX_FRAMES} allowed)")
        head = 4 + 8 * count
        if have < head:
            return None
        lengths = struct.unpack_from(f"<{count}Q", buf, start + 4)
        size = head + sum(lengths)
        if size > MAX_MESSAGE_BYTES:
            raise WireError(f"a direct message of {size} bytes (at most {MAX_MESSAGE_BYTES})")
        if have < size:
            self._make_room(size - have)
            return None
        view = memoryview(buf)
        offset, frames = start + head, []
        large = size > READ_BYTES  # handed over with its buffer, not copied
        for length in lengths:
            frame = view[offset:offset + length]
            frames.append(frame if large else bytes(frame))
            offset += length
        self._start = offset
        if large:  # the frames keep this buffer: later reads go to a new one
            self._buf = bytearray(buf[offset:self._end]) + bytearray(READ_BYTES)
            self._start, self._end = 0, self._end - offset
        elif self._start == self._end:
            self._start = self._end = 0
        return frames

    def _make_room(self, more: int) -> None:
        """Room after ``_end`` for ``more`` bytes (exactly a large message's rest, so one read can take it)."""
        if len(self._buf) - self._end >= more:
            return
        kept = self._end - self._start
        if self._start and len(self._buf) - kept >= more:
            self._buf[:kept] = self._buf[self._start:self._end]
        else:
            grown = bytearray(kept + max(more, READ_BYTES))
            grown[:kept] = self._buf[self._start:self._end]
            self._buf = grown
        self._start, self._end = 0, kept


def message_buffers(frames: Sequence[Frame]) -> tuple[list[Any], int]:
    """What ``sendmsg`` sends for one message (its prefix, then its frames) and how many bytes that is."""
    if len(frames) == 1 and type(frames[0]) is bytes:
        frame = frames[0]
        return [_ONE.pack(1, len(frame)), frame], 12 + len(frame)
    lengths = [memoryview(f).nbytes for f in frames]
    prefix = _COUNT.pack(len(frames)) + struct.pack(f"<{len(frames)}Q", *lengths)
    return [prefix, *frames], len(prefix) + sum(lengths)


def client_path(ipc_endpoint: str) -> str:
    """Where the runtime bound at ``ipc_endpoint`` takes local clients' stream connections (beside it)."""
    return ipc_endpoint.removeprefix("ipc://") + ".stream"


def listen(path: str) -> _socket.socket:
    """A listening Unix socket at ``path`` (whose folder is private to the runtime and its containers)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def accept(listener: _socket.socket) -> StreamConn | None:
    """A connection waiting on ``listener`` (non-blocking), or None when it gave up meanwhile."""
    try:
        fd, _ = listener._accept()  # type: ignore[attr-defined]  # what socket.socket.accept wraps
    except BlockingIOError:
        return None
    return StreamConn(_socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd))


def _timeval(timeout_ms: int | None) -> bytes:
    if timeout_ms is None:
        return _TIMEVAL.pack(0, 0)  # zero: no timeout
    timeout_ms = max(timeout_ms, 1)
    return _TIMEVAL.pack(timeout_ms // 1000, (timeout_ms % 1000) * 1000)
