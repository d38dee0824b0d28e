"""The runtime's SQLite files: how each is opened, and frames packed into one blob.

Every store (jobs, Dict/Queue, deployed apps) is one SQLite file in the state
dir, in WAL mode with ``synchronous=NORMAL`` (it survives a crash of the
runtime, not a power loss of the host), in autocommit mode: each store opens
its own transactions.  Blobs hold frames as the daemon got them, never
unpickled.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
from pathlib import Path

from .protocol import framing
from .protocol.framing import Frame


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """``path`` opened (made if new) for the daemon's loop, with ``schema`` applied."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # One transaction for the whole schema: in autocommit mode each CREATE would be a commit of its own (a
    # few ms of every daemon start for a new state folder).
    db.executescript(f"BEGIN;\n{schema}\nCOMMIT;")
    return db


log = logging.getLogger("remotecell.runtime")


class Checkpointer:
    """Copies a WAL into its database on a thread of its own, so that the loop's commits seldom wait for the disk.

    SQLite checkpoints on the committing thread once the WAL passes ``wal_autocheckpoint``
    pages: two fsyncs, milliseconds on a VM's disk, while the daemon's loop stands still. Here a
    second connection runs a PASSIVE checkpoint (it neither blocks the writer nor waits for it)
    at most every ``every_s`` after a commit said so (``wake``: idle, the thread sleeps). The
    writer's own checkpoint stays, at a threshold of ``backstop_pages``: should this one fall
    behind, the WAL still stops growing there; and it is short, as most pages were copied here.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, every_s: float, backstop_pages: int) -> None:
        db.execute(f"PRAGMA wal_autocheckpoint={backstop_pages}")
        self.every_s = every_s
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), name=f"checkpoint {path.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something was committed: checkpoint soon (``set`` takes a lock: not when the flag is up already)."""
        if not self._dirty.is_set():
            self._dirty.set()

    def _run(self, path: Path) -> None:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.is_set():
                self._dirty.wait()
                self._dirty.clear()
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the writer's own checkpoint is still there: say so, go on
                    log.warning("background checkpoint of %s failed: %s", path.name, exc)
                self._stopping.wait(self.every_s)  # let commits gather
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        self._thread.join()


def pack(frames: list[Frame]) -> bytes:
    """Frames in one blob: their count, their lengths, then their bytes."""
    blobs = [f if type(f) is bytes else memoryview(framing.buffer_of(f)).cast("B") for f in frames]
    return struct.pack(f"<I{len(blobs)}Q", len(blobs), *map(len, blobs)) + b"".join(blobs)


def unpack(blob: bytes) -> list[Frame]:
    (count,) = struct.unpack_from("<I", blob)
    lengths = struct.unpack_from(f"<{count}Q", blob, 4)
    view, offset, frames = memoryview(blob), 4 + 8 * count, []
    for n in lengths:
        frames.append(view[offset:offset + n])
        offset += n
    return frames
