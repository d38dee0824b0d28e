"""The runtime's SQLite files: how each is opened, and frames packed into one blob.

Every store (jobs, Dict/Queue, deployed apps) is one SQLite file in the state
dir, in WAL mode with ``synchronous=NORMAL`` (it survives a crash of the
runtime, not a power loss of the host), in autocommit mode: each store opens
its own transactions.  Blobs hold frames as the daemon got them, never
unpickled.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from .protocol import framing
from .protocol.framing import Frame


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """``path`` opened (made if new) for the daemon's loop, with ``schema`` applied."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


def pack(frames: list[Frame]) -> bytes:
    """Frames in one blob: their count, their lengths, then their bytes."""
    views = [memoryview(framing.buffer_of(f)).cast("B") for f in frames]
    head = struct.pack(f"<I{len(views)}Q", len(views), *(len(v) for v in views))
    return head + b"".join(views)


def unpack(blob: bytes) -> list[Frame]:
    (count,) = struct.unpack_from("<I", blob)
    lengths = struct.unpack_from(f"<{count}Q", blob, 4)
    view, offset, frames = memoryview(blob), 4 + 8 * count, []
    for n in lengths:
        frames.append(view[offset:offset + n])
        offset += n
    return frames
