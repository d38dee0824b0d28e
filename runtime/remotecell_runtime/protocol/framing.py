"""Message framing: a list of ZeroMQ frames per message, a JSON header, payload frames.

A message is::

    [PROTOCOL, header_json, *payload_frames]

The header is a JSON object with at least ``t`` (the message type) and, for
requests, ``id`` (a client-made request id).  It describes its payloads in
``p``: one entry per payload, ``{"n": frame_count, "shm": [[i, name, size]]}``.
A payload is a pickle-5 stream followed by its out-of-band buffers; a buffer
listed in ``shm`` travels through a shared-memory segment and its frame is
empty.

On the direct hop (a leaseholder and its leased container) a message goes
*inline*: the tag, the header and its small payloads share one frame::

    [PROTOCOL + header_json + b"\n" + pack, *other_payload_frames]

(compact JSON never holds a raw newline), because each zmq frame costs more than
the whole header: a call and its result there are one frame each way.  ``decode``
reads both forms; the daemon slices frames itself, so only the two ends of the
direct hop send inline.

Invariant: nothing here unpickles.  The daemon uses this module alone and
treats payload frames as opaque bytes.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

PROTOCOL = b"rc/1"
PROTOCOL_PREFIX = b"rc/"
_TAG_LEN = len(PROTOCOL)
_INLINE_START = PROTOCOL + b"{"  # an inline message's first frame: the tag, then its header
_INLINE_PACK = b"\n"  # ends an inline header that small payloads follow

# Buffers smaller than this stay inside the pickle stream: a frame of their own
# costs more than the copy.
OOB_MIN_BYTES = 64 * 1024
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


def encode(header: dict[str, Any], payloads: Sequence[Payload] = (), inline: bool = False) -> list[Frame]:
    """Frames for one message; the header's ``p`` is filled in from the payloads.

    With several payloads, the small one-frame ones travel packed in one frame
    (``header["pk"]``; such a payload is described by its length alone, an int).
    ``inline`` (the direct hop only): the tag, the header and the pack in the first frame.
    """
    if inline and len(payloads) == 1:
        data = _small(payloads[0])
        if data is not None:  # the direct hop's call or result: its one small payload is the pack
            header["p"], header["pk"] = [len(data)], 1
            return [b"".join((PROTOCOL, _encode_json(header).encode(), _INLINE_PACK, data))]
    if inline or len(payloads) > 1:
        return _encode_packed(header, payloads, inline)
    if payloads:
        header["p"] = [p.meta() for p in payloads]
    frames: list[Frame] = [PROTOCOL, _encode_json(header).encode()]
    for payload in payloads:
        frames.extend(payload.frames)
    return frames


def _small(payload: Payload) -> bytes | None:
    """The bytes of a payload that is one small bytes frame (what pickling makes of a small value), else None."""
    frames = payload.frames
    if len(frames) == 1 and type(frames[0]) is bytes and len(frames[0]) <= PACK_MAX_BYTES and not payload.shm:
        return frames[0]
    return None


def _encode_packed(header: dict[str, Any], payloads: Sequence[Payload], inline: bool) -> list[Frame]:
    metas: list[Any] = []  # an int for a packed payload (its length), else its description
    packed, rest = [], []
    for payload in payloads:
        frames = payload.frames
        if len(frames) == 1 and not payload.shm:
            data = frames[0]
            if type(data) is bytes:  # what pickling makes: a small payload's one frame
                size = len(data)
            else:
                data = buffer_of(data)
                size = memoryview(data).nbytes
            if size <= PACK_MAX_BYTES:
                metas.append(size)
                packed.append(data)
                continue
        metas.append(payload.meta())
        rest.extend(payload.frames)
    if metas:
        header["p"] = metas
    if packed:
        header["pk"] = 1
    head = _encode_json(header).encode()
    if inline:
        return [b"".join((PROTOCOL, head, _INLINE_PACK, *packed)) if packed else PROTOCOL + head, *rest]
    if packed:
        return [PROTOCOL, head, b"".join(packed), *rest]
    return [PROTOCOL, head, *rest]


def decode(frames: Sequence[Frame]) -> tuple[dict[str, Any], list[Payload]]:
    """Parse one message, classic or inline; raise WireError saying what is wrong with it."""
    header, pack, start = _read_head(frames)
    metas = header.get("p")
    if (pack is not None and start == len(frames) and type(metas) is list and len(metas) == 1
            and type(metas[0]) is int and metas[0] == len(pack) and header.get("pk")):
        return header, [Payload([pack])]  # the direct hop's call or result: its one small payload is the pack
    return header, split_payloads(header, list(frames[start:]), pack)


def decode_header(frames: Sequence[Frame]) -> dict[str, Any]:
    """The header alone (enough to route a message, or to answer a broken one by id)."""
    return _read_head(frames)[0]


def _read_head(frames: Sequence[Frame]) -> tuple[dict[str, Any], memoryview | None, int]:
    """The header, the pack when it travels inline (else None), and the index of the first payload frame."""
    first = _bytes_of(frames[0]) if frames else PROTOCOL
    if first.startswith(_INLINE_START):  # the direct hop's messages: looked at first
        end = first.find(_INLINE_PACK, _TAG_LEN)
        if end < 0:
            return _parse_header(first[_TAG_LEN:]), None, 1
        return _parse_header(first[_TAG_LEN:end]), memoryview(first)[end + 1:], 1
    if first == PROTOCOL:
        if len(frames) < 2:
            raise WireError(f"a message needs at least 2 frames (protocol, header), got {len(frames)}")
        return _parse_header(_bytes_of(frames[1])), None, 2
    tag = first.split(b"{", 1)[0]
    if tag.startswith(PROTOCOL_PREFIX):
        raise WireError(f"protocol {tag!r} is not supported; this side speaks {PROTOCOL!r}")
    raise WireError(f"not a remotecell message (first frame {first[:16]!r})")


def _parse_header(raw: bytes) -> dict[str, Any]:
    """``json.loads(raw)``, a compact header in one scan (anything else through the full decoder), checked."""
    try:
        text = raw.decode()
        try:
            header, end = _SCAN(text, 0)
        except StopIteration:  # not a value where the text starts (e.g. whitespace): let the decoder say
            end = -1
        if end != len(text):
            header = _DECODER.decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("t"), str):
        raise WireError("header must be a JSON object with a string 't' (message type)")
    return header


def _bytes_of(frame: Frame) -> bytes:
    """A small frame's bytes: as they are (the direct hop's), a zmq.Frame's cached copy (cheaper than a
    memoryview of it)."""
    if type(frame) is bytes:
        return frame
    try:
        return frame.bytes  # a zmq.Frame, what recv gives
    except AttributeError:
        return bytes(frame)


# One encoder and decoder for every message: json.dumps/loads with options build new ones per call,
# and even JSONEncoder.encode builds its C encoder anew each time; a header is encoded and decoded a
# few times per call, so the C encoder is made once here (no circular check: headers are ours) and
# compact JSON is scanned without the decoder's whitespace passes.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_MAKE_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)  # None without the C module; not in typeshed
_C_ENCODE = _MAKE_C_ENCODER and _MAKE_C_ENCODER(
    None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
_DECODER = json.JSONDecoder()
_SCAN: Any = json.scanner.make_scanner(cast(Any, _DECODER))  # typeshed has it a class of its own


def _encode_json(obj: Any) -> str:
    return "".join(_C_ENCODE(obj, 0)) if _C_ENCODE is not None else _ENCODER.encode(obj)


def split_payloads(header: dict[str, Any], rest: list[Frame], pack: memoryview | None = None) -> list[Payload]:
    """The payloads ``header`` describes, in frames ``rest`` (and ``pack``, when it came inline)."""
    metas = header.get("p")
    if metas is None:
        if rest or pack:
            raise WireError(f"{len(rest)} frames are not described by the header")
        return []
    if type(metas) is not list:
        raise WireError("header 'p' must be a list of payload descriptions")
    announced = header.get("pk")
    if pack is None:
        if announced:
            if not rest:
                raise WireError("header 'pk' announces a pack frame, but there is none")
            pack = memoryview(buffer_of(rest[0])).cast("B")
            rest = rest[1:]
    elif not announced:
        raise WireError("an inline pack that the header does not announce ('pk')")
    payloads: list[Payload] = []
    offset = start = 0
    count = len(rest)
    for meta in metas:
        if type(meta) is int:  # a packed payload: its length
            end = offset + meta
            if pack is None or meta < 0 or end > len(pack):
                raise WireError(f"packed payload of {meta} bytes does not fit the pack frame")
            payloads.append(Payload([pack[offset:end]]))
            offset = end
            continue
        n = meta.get("n") if type(meta) is dict else None
        if type(n) is not int or n < 1 or start + n > count:
            raise WireError(f"payload description {meta!r} does not match the {count} frames sent")
        shm = meta.get("shm")
        if shm is None:
            shm = []
        elif not _valid_shm(shm, n):
            raise WireError(f"payload shared-memory list {shm!r} is malformed")
        payloads.append(Payload(rest[start:start + n], shm))
        start += n
    if start != count or (pack is not None and offset != len(pack)):
        raise WireError(f"{count - start} frames are not described by the header")
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
    """The entries of a ``calls``/``results`` message as dicts (the inverse of :func:`encode_many`)."""
    entries = header.get("e")
    if not isinstance(entries, list):
        raise WireError(f"a {header.get('t')!r} message needs a list 'e' of entries")
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and type(entry.get("np", 1)) is int):
            raise WireError(f"entry {entry!r} does not match the {len(payloads)} payloads sent")
    return _paired(entries, [e.get("np", 1) for e in entries], payloads)


class Counted(Protocol):
    """An entry of a many-entries message: how many of the message's payloads are its own."""

    @property
    def n_payloads(self) -> int: ...


C = TypeVar("C", bound=Counted)


def pair(entries: Sequence[C], payloads: list[Payload]) -> list[tuple[C, list[Payload]]]:
    """Typed entries (``calls``, ``results``, ``spawn``) with their payloads, in order; WireError on a mismatch."""
    return _paired(entries, [e.n_payloads for e in entries], payloads)


E = TypeVar("E")


def _paired(entries: Sequence[E], counts: list[int], payloads: list[Payload]) -> list[tuple[E, list[Payload]]]:
    out, start = [], 0
    for entry, n in zip(entries, counts, strict=True):
        if n < 0 or start + n > len(payloads):
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
        if not (isinstance(name, str) and segment_name_ok(name)):
            return False
    return True


def segment_name_ok(name: str) -> bool:
    # Names come from the network: never let one escape the shm directory.
    return name.startswith("rc-") and "/" not in name and ".." not in name and len(name) < 128


def send(sock: Any, frames: Sequence[Frame], flags: int = 0) -> None:
    """send_multipart without its per-frame checks; large frames go without a copy."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        small = type(frame) is bytes and len(frame) < OOB_MIN_BYTES  # a copy costs less than a zmq.Frame
        sock.send(frame, flags | _SNDMORE if i < last else flags, small)


def recv(sock: Any, flags: int = 0) -> list[Any]:
    """All frames of one message as zmq.Frame objects (no copy of large payloads)."""
    frame = sock.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(0, copy=False)
        frames.append(frame)
    return frames


_SNDMORE = 2  # zmq.SNDMORE, without importing zmq into code that only pickles
