"""Blobs: files clients upload once (an image's local files, a build function), kept as ``STATE/blobs/<digest>``.

Invariants: a blob is stored under its name only when its bytes hash to that name
(sha256), so a stored blob is never wrong and a second upload of it is never
needed; it is written to a temporary file and renamed into place, so a reader
never sees half a blob; it is opaque here: never unpickled, never unpacked (what
unpacks one checks what is inside).  Blobs over ``BLOB_MAX_BYTES`` are refused by
their header, before anything is hashed.  Hashing and writing run on a worker
thread, so a large upload does not stall the daemon's loop; the reply follows.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.message import Message
from ..protocol.messages.blobs import BLOB_MAX_BYTES, DIGEST, BlobHasMsg, BlobHasReply, BlobPutMsg
from ..protocol.messages.session import EmptyReply
from .base import Handler, Host, Request, RequestError, Service, answer_later, refusal


def _invalid(message: str) -> RequestError:
    return refusal(ErrorName.INVALID, message)


def checked_digest(digest: object) -> str:
    """``digest`` when it is a blob name (64 lowercase hex digits); a refusal naming it otherwise."""
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise _invalid(f"{digest!r:.80} is not a blob digest (the 64 lowercase hex digits of a sha256)")
    return digest


class Blobs(Service):
    """The ``blob_has`` and ``blob_put`` handlers over ``STATE/blobs``; ``path`` for whoever uses a blob."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.root = host.state_dir / "blobs"

    def handlers(self) -> dict[type[Message], Handler]:
        return {BlobHasMsg: self.on_has, BlobPutMsg: self.on_put}

    def path(self, digest: str) -> Path:
        """Where blob ``digest`` is (or would be) kept."""
        return self.root / checked_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def on_has(self, req: Request[BlobHasMsg]) -> BlobHasReply:
        return BlobHasReply(missing=[d for d in req.msg.digests if not self.has(d)])

    def on_put(self, req: Request[BlobPutMsg]) -> EmptyReply | None:
        msg = req.msg
        target = self.path(msg.digest)
        if msg.size > BLOB_MAX_BYTES:
            raise refusal(ErrorName.PAYLOAD_TOO_LARGE,
                          f"blob {msg.digest[:12]} is {msg.size} bytes; the runtime takes blobs of at most "
                          f"{BLOB_MAX_BYTES} (put large files in a Volume)")
        if len(req.payloads) != 1 or req.payloads[0].shm:
            raise _invalid("blob_put carries exactly one payload, its raw bytes, not in shared memory")
        data = b"".join(bytes(framing.buffer_of(f)) for f in req.payloads[0].frames)
        if len(data) != msg.size:
            raise _invalid(f"blob {msg.digest[:12]} says {msg.size} bytes but {len(data)} came")
        if target.is_file():
            return EmptyReply()
        answer_later(self.host, req, lambda: self._store(target, data), "could not store the blob")
        return None

    def _store(self, target: Path, data: bytes) -> EmptyReply:
        actual = hashlib.sha256(data).hexdigest()
        if actual != target.name:
            raise _invalid(f"blob_put of {target.name[:12]}: its bytes hash to {actual[:12]}, not to the digest "
                           "it was named by (changed in transit, or named wrongly); nothing was stored")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=self.root, prefix=f".{target.name[:12]}-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(staging, target)
        except BaseException:
            os.unlink(staging)
            raise
        return EmptyReply()
