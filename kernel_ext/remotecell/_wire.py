"""The wire: message framing, payload pickling and the shared-memory path.

A message is a list of ZeroMQ frames::

    [PROTOCOL, header_json, *payload_frames]

The header is a JSON object with at least ``t`` (the message type) and, for
requests, ``id`` (a client-made request id).  It describes its payloads in
``p``: one entry per payload, ``{"n": frame_count, "shm": [[i, name, size]]}``.
A payload is a pickle-5 stream followed by its out-of-band buffers; a buffer
listed in ``shm`` travels through a shared-memory segment and its frame is
empty.  The daemon reads headers only: payload frames are opaque to it.

This module is shared by the client, the daemon and the containers.  Only
``serialize``/``deserialize`` unpickle, and the daemon never calls them.
"""

from __future__ import annotations

import atexit
import io
import itertools
import json
import mmap
import os
import pickle
import secrets
import sys
import threading
import types
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

PROTOCOL = b"rc/1"
PROTOCOL_PREFIX = b"rc/"

# Buffers smaller than this stay inside the pickle stream: a frame of their own
# costs more than the copy.
OOB_MIN_BYTES = 64 * 1024
# Buffers at least this large go through shared memory when both ends share a host.
SHM_MIN_BYTES = 1024 * 1024
SHM_DIR = "/dev/shm"
# In a message with many payloads, one-frame payloads under this size share one frame (the pack):
# a zmq frame costs each hop more than a copy of a few hundred bytes.
PACK_MAX_BYTES = 16 * 1024

Frame = Any  # bytes, memoryview or zmq.Frame


class WireError(ValueError):
    """A message that does not follow the protocol."""


@dataclass
class Payload:
    """One pickled object: the pickle stream, then its out-of-band buffers."""

    frames: list[Frame]
    shm: list[list[Any]] = field(default_factory=list)  # [buffer index, segment name, size]

    def meta(self) -> dict[str, Any]:
        if self.shm:
            return {"n": len(self.frames), "shm": self.shm}
        return {"n": len(self.frames)}

    @property
    def nbytes(self) -> int:
        inline = sum(len(memoryview(buffer_of(f))) for f in self.frames)
        return inline + sum(int(size) for _, _, size in self.shm)


def buffer_of(frame: Frame) -> Any:
    return frame.buffer if hasattr(frame, "buffer") else frame


def encode(header: dict[str, Any], payloads: Sequence[Payload] = ()) -> list[Frame]:
    """Frames for one message; the header's ``p`` is filled in from the payloads.

    With several payloads, the small one-frame ones travel packed in one frame
    (``header["pk"]``; such a payload is described by its length alone, an int).
    """
    if len(payloads) > 1:
        return _encode_packed(header, payloads)
    if payloads:
        header["p"] = [p.meta() for p in payloads]
    frames: list[Frame] = [PROTOCOL, _encode_json(header).encode()]
    for payload in payloads:
        frames.extend(payload.frames)
    return frames


def _encode_packed(header: dict[str, Any], payloads: Sequence[Payload]) -> list[Frame]:
    metas: list[Any] = []  # an int for a packed payload (its length), else its description
    packed, rest = [], []
    for payload in payloads:
        if len(payload.frames) == 1 and not payload.shm:
            data = buffer_of(payload.frames[0])
            size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
            if size <= PACK_MAX_BYTES:
                metas.append(size)
                packed.append(data)
                continue
        metas.append(payload.meta())
        rest.extend(payload.frames)
    header["p"] = metas
    if packed:
        header["pk"] = 1
    frames: list[Frame] = [PROTOCOL, _encode_json(header).encode()]
    if packed:
        frames.append(b"".join(packed))
    frames.extend(rest)
    return frames


def decode(frames: Sequence[Frame]) -> tuple[dict[str, Any], list[Payload]]:
    """Parse one message; raise WireError saying what is wrong with it."""
    header = decode_header(frames)
    return header, split_payloads(header, list(frames[2:]))


def decode_header(frames: Sequence[Frame]) -> dict[str, Any]:
    """The header alone (enough to route a message, or to answer a broken one by id)."""
    if len(frames) < 2:
        raise WireError(f"a message needs at least 2 frames (protocol, header), got {len(frames)}")
    tag = bytes(buffer_of(frames[0]))
    if tag != PROTOCOL:
        if tag.startswith(PROTOCOL_PREFIX):
            raise WireError(f"protocol {tag!r} is not supported; this side speaks {PROTOCOL!r}")
        raise WireError(f"not a remotecell message (first frame {tag[:16]!r})")
    try:
        header = _decode_json(bytes(buffer_of(frames[1])).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise WireError("header must be a JSON object with a string 't' (message type)")
    return header


# One encoder and decoder for every message: json.dumps/loads with options build new ones per call.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_decode_json = json.JSONDecoder().decode


def split_payloads(header: dict[str, Any], rest: list[Frame]) -> list[Payload]:
    metas = header.get("p")
    if metas is None:
        if rest:
            raise WireError(f"{len(rest)} frames are not described by the header")
        return []
    if not isinstance(metas, list):
        raise WireError("header 'p' must be a list of payload descriptions")
    pack, offset = None, 0
    if header.get("pk"):
        if not rest:
            raise WireError("header 'pk' announces a pack frame, but there is none")
        pack = memoryview(buffer_of(rest[0])).cast("B")
        rest = rest[1:]
    payloads, start = [], 0
    for meta in metas:
        if type(meta) is int:  # a packed payload: its length
            if pack is None or meta < 0 or offset + meta > len(pack):
                raise WireError(f"packed payload of {meta} bytes does not fit the pack frame")
            payloads.append(Payload([pack[offset:offset + meta]]))
            offset += meta
            continue
        n = meta.get("n") if isinstance(meta, dict) else None
        if not isinstance(n, int) or n < 1 or start + n > len(rest):
            raise WireError(f"payload description {meta!r} does not match the {len(rest)} frames sent")
        shm = meta.get("shm")
        if shm is None:
            shm = []
        elif not _valid_shm(shm, n):
            raise WireError(f"payload shared-memory list {shm!r} is malformed")
        payloads.append(Payload(rest[start:start + n], shm))
        start += n
    if start != len(rest) or (pack is not None and offset != len(pack)):
        raise WireError(f"{len(rest) - start} frames are not described by the header")
    return payloads


Entry = tuple[dict[str, Any], list[Payload]]  # one input's header fields and its payloads


def encode_many(kind: str, entries: Sequence[Entry], **fields: Any) -> list[Frame]:
    """One ``calls``/``results`` message for many inputs: ``header["e"]`` lists them, each with ``np`` payloads
    (1 when not said).

    A single result goes as a plain ``result`` message, the form every receiver knows.
    """
    if kind == "results" and len(entries) == 1:
        header, payloads = entries[0]
        return encode(dict(header, t="result"), payloads)
    described, payloads = [], []
    for head, own in entries:
        described.append(head if head.get("np", 1) == len(own) else dict(head, np=len(own)))
        payloads.extend(own)
    return encode({"t": kind, "e": described, **fields}, payloads)


def split_many(header: dict[str, Any], payloads: list[Payload]) -> list[Entry]:
    """The entries of a ``calls``/``results`` message (the inverse of :func:`encode_many`)."""
    entries = header.get("e")
    if not isinstance(entries, list):
        raise WireError(f"a {header.get('t')!r} message needs a list 'e' of entries")
    out, start = [], 0
    for entry in entries:
        n = entry.get("np", 1) if isinstance(entry, dict) else None
        if not isinstance(n, int) or n < 0 or start + n > len(payloads) or not isinstance(entry.get("id"), str):
            raise WireError(f"entry {entry!r} does not match the {len(payloads)} payloads sent")
        out.append((entry, payloads[start:start + n]))
        start += n
    if start != len(payloads):
        raise WireError(f"{len(payloads) - start} payloads are not described by the entries")
    return out


def _valid_shm(shm: Any, n: int) -> bool:
    if not isinstance(shm, list):
        return False
    for entry in shm:
        if not (isinstance(entry, list) and len(entry) == 3):
            return False
        index, name, size = entry
        if not (isinstance(index, int) and 0 < index < n and isinstance(size, int) and size >= 0):
            return False
        if not (isinstance(name, str) and _segment_name_ok(name)):
            return False
    return True


def _segment_name_ok(name: str) -> bool:
    # Names come from the network: never let one escape the shm directory.
    return name.startswith("rc-") and "/" not in name and ".." not in name and len(name) < 128


def send(sock: Any, frames: Sequence[Frame], flags: int = 0) -> None:
    """send_multipart without its per-frame checks; large frames go without a copy."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        small = isinstance(frame, bytes) and len(frame) < OOB_MIN_BYTES
        sock.send(frame, flags | (_SNDMORE if i < last else 0), copy=small)


def recv(sock: Any, flags: int = 0) -> list[Any]:
    """All frames of one message as zmq.Frame objects (no copy of large payloads)."""
    frame = sock.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(0, copy=False)
        frames.append(frame)
    return frames


_SNDMORE = 2  # zmq.SNDMORE, without importing zmq into code that only pickles


# -- pickling ---------------------------------------------------------------------------------


class _Pickler(cloudpickle.Pickler):
    """cloudpickle that sends torch tensors as NumPy buffers (out of band, CUDA to CPU)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            return _reduce_code(obj)
        torch = sys.modules.get("torch")
        if torch is not None and type(obj) is torch.Tensor:
            return _reduce_tensor(torch, obj)
        return super().reducer_override(obj)


def _reduce_code(code: types.CodeType) -> Any:
    # cloudpickle blanks co_filename to "<dynamic-code>"; keep the real one so remote
    # tracebacks name the caller's file and line, and the caller can show the source.
    rebuild, args = cloudpickle.cloudpickle._code_reduce(code)
    return rebuild, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


def _reduce_tensor(torch: Any, tensor: Any) -> Any:
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    try:
        return _tensor_from_numpy, (t.numpy(), None, tensor.requires_grad)
    except TypeError:  # dtypes NumPy lacks (bfloat16, ...): ship the raw bytes
        raw = t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)
        return _tensor_from_numpy, ((raw.numpy(), str(t.dtype), list(t.shape)), None, tensor.requires_grad)


def _tensor_from_numpy(array: Any, _unused: Any, requires_grad: bool) -> Any:
    import torch

    if isinstance(array, tuple):
        raw, dtype_name, shape = array
        t = torch.from_numpy(raw).view(getattr(torch, dtype_name.removeprefix("torch."))).reshape(shape)
    else:
        t = torch.from_numpy(array)
    return t.requires_grad_(requires_grad) if requires_grad else t


_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})


def _plain(obj: Any, depth: int = 3) -> bool:
    """Small builtin values: the C pickler handles them 10x faster than cloudpickle's setup."""
    t = type(obj)
    if t in _SCALARS:
        return True
    if not depth or (t is not tuple and t is not list and t is not dict) or len(obj) > 32:
        return False
    if t is dict:
        for key, value in obj.items():
            if type(key) not in _SCALARS or (type(value) not in _SCALARS and not _plain(value, depth - 1)):
                return False
        return True
    for item in obj:  # loops, not all(<genexpr>): this runs on every call
        if type(item) not in _SCALARS and not _plain(item, depth - 1):
            return False
    return True


def serialize_args(args: tuple, kwargs: dict[str, Any], shm: ShmPool | None = None) -> Payload:
    """``serialize((args, kwargs))``, with a short way for the common call ``f(1)``, ``f("a", 2.0)``."""
    if not kwargs:
        for arg in args:
            if type(arg) not in _SCALARS:
                return serialize((args, kwargs), shm)
        return Payload([pickle.dumps((args, kwargs), protocol=5)])
    return serialize((args, kwargs), shm)


def serialize(obj: Any, shm: ShmPool | None = None) -> Payload:
    """Pickle ``obj`` (protocol 5); large buffers go out of band, through ``shm`` if given."""
    if _plain(obj):
        return Payload([pickle.dumps(obj, protocol=5)])
    buffers: list[pickle.PickleBuffer] = []

    def keep_out_of_band(buf: pickle.PickleBuffer) -> bool:
        if memoryview(buf).nbytes < OOB_MIN_BYTES:
            return True  # in band
        buffers.append(buf)
        return False

    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=keep_out_of_band).dump(obj)
    payload = Payload([out.getbuffer()])
    for buf in buffers:
        raw = buf.raw()  # contiguous byte view; no copy
        if shm is not None and raw.nbytes >= SHM_MIN_BYTES:
            name = shm.put(raw)
            payload.shm.append([len(payload.frames), name, raw.nbytes])
            payload.frames.append(b"")
        else:
            payload.frames.append(raw)
    return payload


def deserialize(payload: Payload, hold: bool = False) -> Any:
    """Rebuild the object; shared-memory buffers become writable arrays without a copy.

    ``hold``: the segments stay the sender's until ``ShmPool.settle`` (an input the
    runtime may retry must find them intact).
    """
    if len(payload.frames) == 1:  # no out-of-band buffers: the common small value
        return pickle.loads(buffer_of(payload.frames[0]))
    buffers: list[Any] = [_writable(f) for f in payload.frames[1:]]
    for index, name, size in payload.shm:
        buffers[index - 1] = ShmPool.local().take(name, size, hold)
    return pickle.loads(buffer_of(payload.frames[0]), buffers=buffers)


def _writable(frame: Frame) -> Any:
    # Frames received without copying are read-only; arrays rebuilt on them would be
    # too, which surprises users. Only large tcp payloads take this copy.
    buf = buffer_of(frame)
    return bytearray(buf) if isinstance(buf, memoryview) and buf.readonly else buf


def dumps(obj: Any) -> bytes:
    """A single in-band pickle (function bodies, small control values)."""
    out = io.BytesIO()
    _Pickler(out, protocol=5).dump(obj)
    return out.getvalue()


# -- shared memory ----------------------------------------------------------------------------


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
        name = self._reuse(size)
        if name is None:
            name = f"{self.prefix}-{os.getpid()}-{next(self._counter)}"
            fd = os.open(os.path.join(SHM_DIR, name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        else:
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
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
        if not _segment_name_ok(name):
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

    def _reuse(self, size: int) -> str | None:
        with self._lock:
            fits = [i for i, (_, s) in enumerate(self._idle) if s >= size]
            if not fits:
                return None
            best = min(fits, key=lambda i: self._idle[i][1])
            return self._idle.pop(best)[0]

    def _give_back(self, name: str, size: int) -> None:
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
            if _segment_name_ok(name):
                _unlink_quietly(os.path.join(SHM_DIR, name))


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
