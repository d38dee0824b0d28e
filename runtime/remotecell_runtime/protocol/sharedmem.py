"""Shared-memory segments for large buffers between processes on one host.

Segment names come from the network: ``framing.segment_name_ok`` keeps every one
inside ``/dev/shm``.  Each process unlinks its idle segments at exit; one killed
cannot, so its runtime sweeps them (``sweep_orphans``).

Invariant: a segment's name says who holds it: ``<pool prefix>-<pid>-<n>``, where a
container's pool prefix is its runtime's and its id (``rc-<runtime>-<cid>``) and a
client's is ``rc-<8 hex>``.  A received segment kept for a later send is renamed into
its new holder's name as it becomes that pool's.
"""

from __future__ import annotations

import atexit
import itertools
import mmap
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .framing import Payload, WireError, segment_name_ok

# Buffers at least this large go through shared memory when both ends share a host.
SHM_MIN_BYTES = 1024 * 1024
SHM_DIR = "/dev/shm"


class ShmPool:
    """Shared-memory segments for large buffers between processes on one host.

    The sender copies a buffer into a segment and sends its name; the receiver maps
    it and its arrays use the mapping directly.  Ownership moves with the message.
    When the receiver's arrays are gone the segment is kept, its pages already
    faulted in, for this process's next large send: copying into a fresh segment
    costs ~3x more than into a reused one.
    """

    _instance: ShmPool | None = None
    _instance_lock = threading.Lock()

    def __init__(self, prefix: str = "", max_idle_bytes: int = 2 << 30, max_idle: int = 8) -> None:
        self.prefix = prefix or f"rc-{secrets.token_hex(4)}"
        self._counter = itertools.count()
        self._idle: list[tuple[str, int]] = []
        self._held: dict[str, bool] = {}  # segment -> released already
        self._disowned: set[str] = set()
        self._lock = threading.Lock()
        self.max_idle_bytes = max_idle_bytes
        self.max_idle = max_idle

    @classmethod
    def local(cls) -> ShmPool:
        if cls._instance is not None:  # every call asks: no lock once it exists
            return cls._instance
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = ShmPool(prefix=os.environ.get("REMOTECELL_SHM_PREFIX", ""))
                atexit.register(cls._instance.clear)
            return cls._instance

    @staticmethod
    def available() -> bool:
        return _SHM_AVAILABLE

    def put(self, data: memoryview) -> str:
        """Copy ``data`` into a segment this process gives away; return its name."""
        size = data.nbytes
        name, fd = self._reused(size) or self._created()
        try:
            os.ftruncate(fd, size)
            if size:
                with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE) as mm:
                    memoryview(mm)[:] = data.cast("B")
        finally:
            os.close(fd)
        return name

    def take(self, name: str, size: int, hold: bool = False) -> Any:
        """Map a received segment; it returns to this pool when the last view is gone."""
        if not segment_name_ok(name):
            raise WireError(f"bad shared-memory segment name {name!r}")
        path = os.path.join(SHM_DIR, name)
        if size == 0:
            _unlink_quietly(path)
            return bytearray()
        fd = os.open(path, os.O_RDWR)
        try:
            # Private: reads share the sender's pages, a write copies the page, so changing
            # a received array in place never alters the segment (a retry sees the original).
            mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE)
        finally:
            os.close(fd)
        if hold:
            with self._lock:
                self._held[name] = False
        weakref.finalize(mm, self._released, name, size).atexit = False
        return mm

    def _released(self, name: str, size: int) -> None:
        with self._lock:
            if name in self._held:  # not ours yet: settle() decides
                self._held[name] = True
                return
            if name in self._disowned:  # the runtime frees it
                self._disowned.discard(name)
                return
        self._give_back(name, size)

    def settle(self, segments: list[list[Any]], keep: bool) -> None:
        """Held segments become ours (``keep``: the input succeeded) or stay the runtime's to free."""
        for _, name, size in segments:
            with self._lock:
                released = self._held.pop(name, None)
                if released is False and not keep:
                    self._disowned.add(name)
            if keep and released:
                self._give_back(name, size)

    def _created(self) -> tuple[str, int]:
        name = f"{self.prefix}-{os.getpid()}-{next(self._counter)}"
        return name, os.open(os.path.join(SHM_DIR, name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)

    def _reused(self, size: int) -> tuple[str, int] | None:
        """An idle segment that fits, opened; one gone meanwhile is dropped (a runtime that stopped
        swept the segments its containers made, some of them idle here)."""
        while (name := self._reuse(size)) is not None:
            try:
                return name, os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
            except FileNotFoundError:
                continue
        return None

    def _reuse(self, size: int) -> str | None:
        with self._lock:
            fits = [i for i, (_, s) in enumerate(self._idle) if s >= size]
            if not fits:
                return None
            best = min(fits, key=lambda i: self._idle[i][1])
            return self._idle.pop(best)[0]

    def _give_back(self, name: str, size: int) -> None:
        if not name.startswith(f"{self.prefix}-{os.getpid()}-"):  # a received one: named ours from now on
            mine = f"{self.prefix}-{os.getpid()}-{next(self._counter)}"
            try:
                os.rename(os.path.join(SHM_DIR, name), os.path.join(SHM_DIR, mine))
            except FileNotFoundError:  # swept meanwhile (its sender's runtime stopped): nothing to keep
                return
            name = mine
        with self._lock:
            self._idle.append((name, size))
            while len(self._idle) > self.max_idle or sum(s for _, s in self._idle) > self.max_idle_bytes:
                old, _ = self._idle.pop(0)
                _unlink_quietly(os.path.join(SHM_DIR, old))

    def clear(self) -> None:
        with self._lock:
            for name, _ in self._idle:
                _unlink_quietly(os.path.join(SHM_DIR, name))
            self._idle.clear()


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_SHM_AVAILABLE = os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def discard(payloads: Sequence[Payload]) -> None:
    """Free the shared-memory segments of payloads that will never be delivered."""
    for payload in payloads:
        for _, name, _ in payload.shm:
            if segment_name_ok(name):
                _unlink_quietly(os.path.join(SHM_DIR, name))


_CLIENT_SEGMENT = re.compile(r"^rc-[0-9a-f]{8}-(\d+)-\d+$")


def sweep_orphans(runtime_prefix: str, container_alive: Callable[[str], bool], grace_s: float) -> int:
    """Remove the segments of this runtime's containers that are gone and of client processes that died
    (``kill -9`` leaves them), untouched for ``grace_s`` (one may be on its way to its receiver); how many."""
    if not os.path.isdir(SHM_DIR):
        return 0
    ours, removed, now = f"{runtime_prefix}-", 0, time.time()
    for name in os.listdir(SHM_DIR):
        if name.startswith(ours):
            cid = name[len(ours):].rsplit("-", 2)[0]  # <cid>-<pid>-<n>
            orphan = not container_alive(cid)
        else:
            client = _CLIENT_SEGMENT.match(name)
            orphan = client is not None and not _pid_alive(int(client.group(1)))
        if orphan and _untouched_for(os.path.join(SHM_DIR, name), now, grace_s):
            _unlink_quietly(os.path.join(SHM_DIR, name))
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def _untouched_for(path: str, now: float, grace_s: float) -> bool:
    try:
        return now - os.stat(path).st_mtime >= grace_s
    except FileNotFoundError:
        return False


def sweep_segments(prefix: str) -> int:
    """Remove leftover segments whose names start with ``prefix``; return how many."""
    if not prefix.startswith("rc-") or not os.path.isdir(SHM_DIR):
        return 0
    removed = 0
    for name in os.listdir(SHM_DIR):
        if name.startswith(prefix):
            _unlink_quietly(os.path.join(SHM_DIR, name))
            removed += 1
    return removed
