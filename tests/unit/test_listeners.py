"""listeners.StreamListener: local clients over a Unix stream socket, on a real event loop, never blocking it."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from remotecell_runtime.listeners import StreamListener, StreamPeer
from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.framing import Frame
from remotecell_runtime.protocol.stream import StreamClosed, StreamConn

BIG_BYTES = 64 << 20  # far past what a socket buffer takes at once: the listener must queue the rest


class Echo:
    """A loop thread with a StreamListener that answers each message with its own frames."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.drains = 0
        self.listener: StreamListener | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "the listener did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.listener = StreamListener(self.path, self.on_message, self.drained, shm=False)
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def on_message(self, peer: object, identity: bytes, frames: list[Frame]) -> None:
        assert isinstance(peer, StreamPeer) and identity == peer.identity
        peer.send(identity, [bytes(f) if len(f) < 1024 else f for f in frames])

    def drained(self) -> None:
        self.drains += 1

    def peers(self) -> int:
        assert self.listener is not None
        return len(self.listener.peers)

    def close(self) -> None:
        assert self.listener is not None
        self.loop.call_soon_threadsafe(self.listener.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[Echo]:
    server = Echo(str(tmp_path / "runtime.sock.stream"))
    yield server
    server.close()


def _ping(conn: StreamConn, n: int) -> dict:
    conn.send(framing.encode({"t": "ping", "id": str(n)}))
    return framing.decode_header(conn.recv())


def test_a_client_gets_its_answers_in_order_and_the_socket_is_private(echo):
    assert stat.S_IMODE(os.stat(echo.path).st_mode) == 0o600
    conn = StreamConn.connect(echo.path, timeout_ms=5000)
    assert [_ping(conn, n)["id"] for n in range(100)] == [str(n) for n in range(100)]
    assert echo.drains >= 1  # told after its reads, so the services commit what those messages changed


def test_a_large_answer_to_a_slow_reader_is_queued_without_blocking_the_loop(echo):
    slow = StreamConn.connect(echo.path, timeout_ms=30_000)
    payload = os.urandom(1 << 20) * (BIG_BYTES >> 20)
    slow.send([framing.PROTOCOL, b'{"t":"big"}', payload])  # echoed back: 64 MB it does not read yet
    other = StreamConn.connect(echo.path, timeout_ms=5000)
    assert _ping(other, 1)["id"] == "1"  # the loop answers others while the big answer waits in its queue
    frames = slow.recv()
    assert len(frames) == 3 and bytes(frames[2]) == payload
    assert _ping(slow, 2)["id"] == "2"  # and the connection goes on after it


def test_what_is_not_a_message_closes_that_connection_only(echo):
    good = StreamConn.connect(echo.path, timeout_ms=5000)
    assert _ping(good, 1)["id"] == "1"
    bad = StreamConn.connect(echo.path, timeout_ms=5000)
    bad.sock.sendall(b"\xff\xff\xff\xff" + b"\0" * 8)  # 4 billion frames: no client of ours sends that
    with pytest.raises(StreamClosed):
        bad.recv()
    assert _ping(good, 2)["id"] == "2"


def test_a_client_that_goes_away_is_forgotten(echo):
    conns = [StreamConn.connect(echo.path, timeout_ms=5000) for _ in range(5)]
    for n, conn in enumerate(conns):
        _ping(conn, n)
    assert echo.peers() == 5
    for conn in conns:
        conn.close()
    wait_for(lambda: echo.peers() == 0, timeout_s=10, what="the listener to close the connections of gone clients")


def test_a_runtime_that_died_leaves_its_socket_and_the_next_one_takes_its_place(tmp_path):
    path = str(tmp_path / "runtime.sock.stream")
    Path(path).touch()  # what a killed runtime leaves behind
    server = Echo(path)
    try:
        assert _ping(StreamConn.connect(path, timeout_ms=5000), 7)["id"] == "7"
    finally:
        server.close()
    assert not os.path.exists(path)  # a runtime that stops removes it
