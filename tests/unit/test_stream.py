"""protocol.stream: whole messages over a Unix stream socket, however the bytes arrive."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.framing import WireError
from remotecell_runtime.protocol.stream import MAX_FRAMES, READ_BYTES, StreamClosed, StreamConn, message_buffers


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = StreamConn(a, timeout_ms=2000), StreamConn(b, timeout_ms=2000)
    yield left, right
    left.close()
    right.close()


def _prefix(*lengths: int) -> bytes:
    return struct.pack("<I", len(lengths)) + struct.pack(f"<{len(lengths)}Q", *lengths)


def test_a_message_arrives_whole_with_its_frames(pair):
    left, right = pair
    left.send([b"head", b"", b"x" * 10])
    assert [bytes(f) for f in right.recv()] == [b"head", b"", b"x" * 10]


def test_messages_read_in_one_read_come_out_one_at_a_time(pair):
    left, right = pair
    for i in range(5):
        left.send([f"m{i}".encode()])
    assert [right.recv() for _ in range(5)] == [[f"m{i}".encode()] for i in range(5)]
    assert not right.pending()


def test_a_message_trickling_in_byte_by_byte_survives_timeouts(pair):
    left, right = pair
    right.set_timeout(1)
    raw = _prefix(3) + b"abc"
    for i, byte in enumerate(raw):
        left.sock.send(bytes([byte]))
        if i < len(raw) - 1:
            with pytest.raises(TimeoutError):
                right.recv()
    assert right.recv() == [b"abc"]


def test_a_large_frame_comes_back_equal_and_later_messages_still_parse(pair):
    left, right = pair
    big = bytes(range(256)) * (3 * READ_BYTES // 256 + 7)
    sender = threading.Thread(target=lambda: (left.send([b"h", memoryview(big)]), left.send([b"after"])))
    sender.start()
    frames = right.recv()
    sender.join(timeout=10)
    assert bytes(frames[0]) == b"h" and bytes(frames[1]) == big
    assert right.recv() == [b"after"]
    assert bytes(frames[1]) == big  # the large frame kept its own buffer


def test_the_inline_frames_of_framing_round_trip(pair):
    left, right = pair
    payload = framing.Payload([b"pickle-bytes"])
    left.send(framing.encode({"t": "call", "id": "a1"}, [payload], inline=True))
    header, payloads = framing.decode(right.recv())
    assert header["id"] == "a1" and bytes(payloads[0].frames[0]) == b"pickle-bytes"


def test_nothing_sent_is_a_timeout(pair):
    _, right = pair
    right.set_timeout(5)
    with pytest.raises(TimeoutError):
        right.recv()


def test_a_closed_peer_is_stream_closed(pair):
    left, right = pair
    left.close()
    with pytest.raises(StreamClosed):
        right.recv()


@pytest.mark.parametrize("prefix", [struct.pack("<I", 0), struct.pack("<I", MAX_FRAMES + 1),
                                    _prefix(1 << 40)], ids=["no frames", "too many frames", "too large"])
def test_a_prefix_no_peer_sends_is_refused_by_name(pair, prefix):
    left, right = pair
    left.sock.sendall(prefix)
    with pytest.raises(WireError, match="direct message of"):
        right.recv()


def test_connect_to_nothing_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        StreamConn.connect(str(tmp_path / "none.sock"))


def test_listen_accept_connect_make_a_pair(tmp_path):
    from remotecell_runtime.protocol.stream import accept, listen

    listener = listen(str(tmp_path / "c.sock"))
    assert accept(listener) is None  # nobody waits: no connection, no block
    client = StreamConn.connect(str(tmp_path / "c.sock"), timeout_ms=2000)
    server = accept(listener)
    assert server is not None
    server.set_timeout(2000)
    client.send([b"ping"])
    assert server.recv() == [b"ping"]
    server.send([b"pong"])
    assert client.recv() == [b"pong"]
    for conn in (client, server):
        conn.close()
    listener.close()


def test_recv_ready_returns_the_whole_messages_a_read_brought_and_keeps_the_rest(pair):
    left, right = pair
    right.sock.setblocking(False)
    assert right.recv_ready() == []  # woken with nothing to read: no messages, no error
    message = framing.encode({"t": "ping", "id": "1"})
    raw = b"".join(bytes(buf) for buf in message_buffers(message)[0])
    left.sock.sendall(raw + raw + raw[:5])  # two whole messages and the start of a third
    got = right.recv_ready()
    assert [framing.decode_header(frames)["id"] for frames in got] == ["1", "1"]
    left.sock.sendall(raw[5:])
    assert [framing.decode_header(frames)["t"] for frames in right.recv_ready()] == ["ping"]


def test_readable_sees_buffered_and_unread_bytes(pair):
    left, right = pair
    assert not right.readable()
    left.send([b"a"])
    assert right.readable()
    assert right.recv() == [b"a"]
    assert not right.readable()


def test_the_client_socket_lives_beside_the_runtimes_ipc_socket():
    from remotecell_runtime.protocol.stream import client_path

    assert client_path("ipc:///home/u/.remotecell/sock/runtime.sock") == "/home/u/.remotecell/sock/runtime.sock.stream"
