"""A sandbox stream's buffer in the daemon: memory first, then its spill file, bytes in order, credit held."""

from __future__ import annotations

import os

from remotecell_runtime.services import sandboxes
from remotecell_runtime.services.sandboxes import StreamBuffer


def test_bytes_past_memory_go_to_the_spill_file_and_come_back_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(sandboxes, "MEMORY_BYTES", 10)
    buffer = StreamBuffer(tmp_path)
    for part in (b"abcdef", b"ghij", b"klmnop", b"qr"):
        buffer.add(part, False)
    assert buffer.size == 10 and buffer.unread == 18  # "klmnop" and "qr" waited on disk
    assert os.listdir(tmp_path) == []  # the spill file has no name
    assert buffer.take(4) == b"abcd"
    buffer.add(b"st", True)  # while the file holds some, new bytes go after them, not into memory
    assert buffer.take(100) == b"efghij" + b"klmnopqrst"
    assert buffer.unread == 0 and buffer.eof
    assert buffer.spill is not None and os.fstat(buffer.spill.fileno()).st_size == 0  # emptied once caught up
    buffer.add(b"uv", False)
    assert buffer.take(1) == b"u" and buffer.take(5) == b"v"
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
    assert buffer.take(3) == b"abc"
    assert buffer.credit_due() == 6  # the reader caught up below the bound: all that was owed
    assert buffer.take(10) == b"defghij"
    buffer.add(b"k", False)
    assert buffer.take(10) == b"k" and buffer.credit_due() == 1  # all read: the rest of the step goes back too
    buffer.close()
