"""The result cache of ``cache=True`` functions: opaque result bytes by key, capped, least recently used out first.

A key is a sha256 over what makes two calls equal: the client's digest of the
function's code (``CachePolicy.code``), the image (its ``ImageSpec`` as JSON), the
method and the pickled arguments' bytes. The value is the container's pickled
result, as it came; nothing here is ever unpickled. Entries live in
``STATE/cache.db`` (SQLite, WAL), so they outlive kernels and runtime restarts;
past ``max_bytes`` (``REMOTECELL_CACHE_MAX_MB``, default 1024) the entries used
least recently go first.

Example::

    cache = ResultCache(state_dir / "cache.db", max_bytes=1 << 30)
    key = cache_key(fn.opts, inp.method, inp.payload)   # None: arguments in shared memory
    cache.put(key, code, payload); cache.get(key)      # the Payload, or None
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .protocol import framing
from .protocol.framing import Payload
from .protocol.options import FunctionOptions
from .storage import open_db, pack, unpack

MAX_MB_ENV = "REMOTECELL_CACHE_MAX_MB"
DEFAULT_MAX_MB = 1024
# The largest result kept. Reads and writes run on the daemon's loop: measured (SQLite, WAL) a 1 MiB entry
# reads in ~1.5 ms and writes in ~7 ms, 16 MiB in ~44/~150 ms, 64 MiB in ~320/~530 ms; past this size the loop
# would stall every caller, so a larger result is passed on and not kept (the call runs again next time).
ENTRY_MAX_BYTES = 4 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    size INTEGER NOT NULL,
    used REAL NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_used ON results (used);
CREATE INDEX IF NOT EXISTS results_code ON results (code);
"""


def max_bytes_from_env(environ: dict[str, str] | None = None) -> int:
    """The cap from ``REMOTECELL_CACHE_MAX_MB`` (a positive number of MiB), else the default; a bad value is an
    error naming it."""
    raw = (environ if environ is not None else os.environ).get(MAX_MB_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb > 0:
        raise ValueError(f"{MAX_MB_ENV}={raw!r}: give the result cache's size cap as a positive number of MiB")
    return int(mb * (1 << 20))


def cache_key(opts: FunctionOptions, method: str | None, args: Payload) -> str | None:
    """The key of one call, or None when its arguments are not all bytes here (shared memory: not cached)."""
    if opts.cache is None or args.shm:
        return None
    digest = hashlib.sha256()
    image = json.dumps(opts.image.to_wire(), sort_keys=True) if opts.image is not None else ""
    for part in (opts.cache.code, image, method or ""):
        digest.update(part.encode())
        digest.update(b"\0")
    for frame in args.frames:
        digest.update(memoryview(framing.buffer_of(frame)).cast("B"))
    return digest.hexdigest()


class ResultCache:
    """``cache.db``: results by key; ``put`` evicts the least recently used past the cap."""

    def __init__(self, path: Path, max_bytes: int, entry_max_bytes: int = ENTRY_MAX_BYTES) -> None:
        self.db = open_db(path, SCHEMA)
        self.max_bytes = max_bytes
        self.entry_max_bytes = entry_max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Payload | None:
        """The stored result of ``key`` (marked used now), or None."""
        row = self.db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        self.db.execute("UPDATE results SET used = ? WHERE key = ?", (time.time(), key))
        return Payload(frames=unpack(row[0]))

    def put(self, key: str, code: str, value: Payload) -> bool:
        """Keep ``value`` (a result's payload, all bytes) under ``key``; False when it cannot be kept (shared memory,
        or larger than ``entry_max_bytes`` or the whole cache)."""
        if value.shm or sum(memoryview(framing.buffer_of(f)).nbytes for f in value.frames) > self.entry_max_bytes:
            return False
        blob = pack(value.frames)
        if len(blob) > self.max_bytes:  # (the entry limit was checked on the frames, before packing a copy)
            return False
        self.db.execute("BEGIN")  # one transaction: the row and the evictions it makes
        try:
            self.db.execute("INSERT OR REPLACE INTO results (key, code, size, used, value) VALUES (?, ?, ?, ?, ?)",
                            (key, code, len(blob), time.time(), blob))
            self._evict()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return True

    def _evict(self) -> None:
        """Drop the least recently used entries until the total is within the cap."""
        (total,) = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM results").fetchone()
        over = total - self.max_bytes
        if over <= 0:
            return
        dropped = []
        for key, size in self.db.execute("SELECT key, size FROM results ORDER BY used"):
            if over <= 0:
                break
            dropped.append((key,))
            over -= size
        self.db.executemany("DELETE FROM results WHERE key = ?", dropped)

    def clear(self, code: str) -> int:
        """Forget every entry of the function whose code digest is ``code``; how many went."""
        return self.db.execute("DELETE FROM results WHERE code = ?", (code,)).rowcount

    def stats(self) -> dict[str, int]:
        """Entries, bytes, cap, and hits and misses since the runtime started (for ``status``)."""
        entries, size = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM results").fetchone()
        return {"entries": entries, "bytes": size, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses}

    def close(self) -> None:
        self.db.close()
