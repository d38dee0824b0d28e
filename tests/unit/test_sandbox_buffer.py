"""A sandbox stream's buffer in the daemon: memory first, then its spill file, bytes in order, credit held."""

from __future__ import annotations

import os

from remotecell_runtime.services import sandboxes
from remotecell_runtime.services.sandboxes import StreamBuffer


def take(buffer: StreamBuffer, n: int) -> bytes:
    """What a reader does: the oldest bytes, then its next read acknowledges them."""
    data = buffer.peek(n)
    buffer.ack(buffer.base + len(data))
    return data


def test_bytes_past_memory_go_to_the_spill_file_and_come_back_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(sandboxes, "MEMORY_BYTES", 10)
    buffer = StreamBuffer(tmp_path)
    for part in (b"abcdef", b"ghij", b"klmnop", b"qr"):
        buffer.add(part, False)
    assert buffer.size == 10 and buffer.unread == 18  # "klmnop" and "qr" waited on disk
    assert os.listdir(tmp_path) == []  # the spill file has no name
    assert take(buffer, 4) == b"abcd"
    buffer.add(b"st", True)  # while the file holds some, new bytes go after them, not into memory
    assert take(buffer, 100) == b"efghij" + b"klmnopqrst"
    assert buffer.unread == 0 and buffer.eof
    assert buffer.spill is not None and os.fstat(buffer.spill.fileno()).st_size == 0  # emptied once caught up
    buffer.add(b"uv", False)
    assert take(buffer, 1) == b"u" and take(buffer, 5) == b"v"
    buffer.close()


def test_credit_goes_back_in_steps_and_waits_while_too_much_is_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(sandboxes, "CREDIT_STEP_BYTES", 4)
    monkeypatch.setattr(sandboxes, "SPILL_BYTES", 8)
    monkeypatch.setattr(sandboxes, "MEMORY_BYTES", 2)
    buffer = StreamBuffer(tmp_path)
    buffer.add(b"abc", False)
    assert buffer.credit_due() == 0  # less than a step
    buffer.add(b"d", False)
    assert buffer.credit_due() == 4
    buffer.add(b"efghij", False)
    assert buffer.unread == 10 and buffer.credit_due() == 0  # past SPILL_BYTES unread: the writer must wait
    assert take(buffer, 3) == b"abc"
    assert buffer.credit_due() == 6  # the reader caught up below the bound: all that was owed
    assert take(buffer, 10) == b"defghij"
    buffer.add(b"k", False)
    assert take(buffer, 10) == b"k" and buffer.credit_due() == 1  # all read: the rest of the step goes back too
    buffer.close()


def test_bytes_stay_until_acknowledged_and_base_counts_what_went(tmp_path, monkeypatch):
    monkeypatch.setattr(sandboxes, "MEMORY_BYTES", 4)
    buffer = StreamBuffer(tmp_path)
    buffer.add(b"abc", False)
    buffer.add(b"defgh", False)  # past memory: in the spill file
    assert buffer.peek(100) == b"abcdefgh" and buffer.peek(100) == b"abcdefgh"  # a lost answer: sent again
    assert buffer.base == 0
    buffer.ack(2)
    assert buffer.base == 2 and buffer.peek(3) == b"cde"
    buffer.ack(1)  # behind what is already dropped: nothing happens
    assert buffer.base == 2 and buffer.unread == 6
    buffer.ack(100)  # past the end: all of it, no more
    assert buffer.base == 8 and buffer.unread == 0 and buffer.peek(10) == b""
    buffer.close()


def test_an_ended_stream_keeps_its_unread_bytes_on_disk_not_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(sandboxes, "MEMORY_BYTES", 8)
    monkeypatch.setattr(sandboxes, "SETTLE_BYTES", 2)
    buffer = StreamBuffer(tmp_path)
    buffer.add(b"abcdef", False)
    buffer.add(b"ghijkl", True)  # memory holds abcdef, the file ghijkl
    assert take(buffer, 2) == b"ab"
    buffer.settle()
    assert buffer.size == 0 and buffer.unread == 10
    assert take(buffer, 3) == b"cde" and take(buffer, 100) == b"fghijkl" and buffer.unread == 0
    small = StreamBuffer(tmp_path)
    small.add(b"xy", True)
    small.settle()  # little: it stays in memory
    assert small.size == 2 and small.spill is None
    buffer.close()
