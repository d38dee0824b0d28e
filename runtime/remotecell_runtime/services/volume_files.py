"""The file requests of volumes: list, read, upload (stage, then put), remove, copy — Modal's file API.

Invariants: the daemon never unpickles here, file bytes are raw payloads of at most
``CHUNK_MAX_BYTES`` each way, and every request's disk work runs on a worker thread
(``answer_later``), so a 1 GB file never sits whole in memory and never holds the
event loop.  Paths stay inside their volume and no link is followed
(``volume_tree``).  An upload's chunks are staged outside the volume and placed
together by ``volume_put``: a failed or abandoned upload leaves nothing in the volume,
and its staged chunks go when it is put, aborted, or its session ends.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.message import Message
from ..protocol.messages.session import EmptyReply
from ..protocol.messages.volumes import (
    CHUNK_MAX_BYTES,
    LS_BATCH,
    VolumeAbortMsg,
    VolumeCopyMsg,
    VolumeEntry,
    VolumeLsItem,
    VolumeLsMsg,
    VolumeLsReply,
    VolumePathError,
    VolumePutMsg,
    VolumeReadMsg,
    VolumeReadReply,
    VolumeRmMsg,
    VolumeStageMsg,
    parts,
)
from ..volume_tree import Move, Staging, Tree
from .base import Handler, Host, Request, RequestError, Service, answer_later, refusal, with_id
from .volumes import VolumeRecord, Volumes

_UPLOAD = re.compile(r"^[0-9a-f]{8,32}$")


@contextmanager
def _refusals(record: VolumeRecord) -> Iterator[None]:
    """What the file API refuses, as the client's errors, each message naming the volume."""
    where = f"volume {record.label()}"
    try:
        yield
    except FileNotFoundError as exc:
        raise refusal(ErrorName.FILE_NOT_FOUND, f"{where}: {exc}") from None
    except FileExistsError as exc:
        raise refusal(ErrorName.FILE_EXISTS, f"{where}: {exc}") from None
    except VolumePathError as exc:
        raise refusal(ErrorName.INVALID, f"{where}: {exc}") from None
    except OSError as exc:
        raise refusal(ErrorName.INVALID, f"{where}: {exc.strerror or exc}") from None


class _Upload:
    """One batch upload while it is staged: its session, how many of its chunks are being written, whether it
    ended (put, aborted, its session gone).

    Its staged files are dropped once it has ended and no chunk of it is being written, whichever comes
    last: a chunk still on a worker thread never makes again what an abort dropped.
    """

    def __init__(self, uid: str, owner: str, staging: Staging) -> None:
        self.uid = uid
        self.owner = owner
        self.staging = staging
        self.writing = 0
        self.ended = False
        self.lock = threading.Lock()  # chunks end on worker threads

    def chunk_begins(self) -> None:
        with self.lock:
            if self.ended:
                raise refusal(ErrorName.INVALID, f"upload {self.uid} has ended; begin another batch_upload")
            self.writing += 1

    def chunk_ends(self) -> None:
        with self.lock:
            self.writing -= 1
            last = self.ended and self.writing == 0
        if last:
            self.staging.drop(self.uid)

    def end(self) -> bool:
        """No more chunks; True when none is being written (the caller drops what was staged)."""
        with self.lock:
            self.ended = True
            return self.writing == 0


class VolumeFiles(Service):
    """The ``volume_ls``/``read``/``stage``/``put``/``abort``/``rm``/``copy`` handlers over ``Volumes``."""

    def __init__(self, host: Host, volumes: Volumes) -> None:
        self.host = host
        self.volumes = volumes
        self.uploads: dict[str, _Upload] = {}  # by id, until put or aborted

    def handlers(self) -> dict[type[Message], Handler]:
        return {VolumeLsMsg: self.on_ls, VolumeReadMsg: self.on_read, VolumeStageMsg: self.on_stage,
                VolumePutMsg: self.on_put, VolumeAbortMsg: self.on_abort, VolumeRmMsg: self.on_rm,
                VolumeCopyMsg: self.on_copy}

    def _later(self, req: Request[Any], record: VolumeRecord, work: Callable[[Tree], Any]) -> None:
        """``work`` on the volume's tree, on a worker thread; its refusals as the client's errors."""
        def run() -> Any:
            with _refusals(record):
                return work(Tree(record.folder))

        answer_later(self.host, req, run, f"volume {record.label()}")

    def on_ls(self, req: Request[VolumeLsMsg]) -> None:
        """Entries ``LS_BATCH`` to an ``item`` message while more follow; the last ones in the reply."""
        msg = req.msg
        record = self.volumes.record(msg.oid)
        loop = asyncio.get_running_loop()

        def item(batch: list[VolumeEntry]) -> None:  # on the worker thread: sent from the loop's
            frames = framing.encode(with_id(VolumeLsItem(entries=batch), req.id))
            loop.call_soon_threadsafe(self.host.send_peer, req.peer, frames)

        def listing(tree: Tree) -> VolumeLsReply:
            batch: list[VolumeEntry] = []
            for entry in tree.entries(parts(msg.path), msg.recursive):
                if len(batch) == LS_BATCH:
                    item(batch)
                    batch = []
                batch.append(entry)
            return VolumeLsReply(entries=batch)

        self._later(req, record, listing)

    def on_read(self, req: Request[VolumeReadMsg]) -> None:
        msg = req.msg
        record = self.volumes.record(msg.oid)
        if not 0 <= msg.length <= CHUNK_MAX_BYTES or msg.offset < 0:
            raise refusal(ErrorName.INVALID, f"volume_read takes 0 to {CHUNK_MAX_BYTES} bytes at an offset >= 0")

        def read(tree: Tree) -> tuple[VolumeReadReply, list[Payload]]:
            data, size, version = tree.read(parts(msg.path), msg.offset, msg.length, msg.version)
            return VolumeReadReply(size=size, version=version), [Payload([data])]

        self._later(req, record, read)

    def _upload(self, req: Request[Any], uid: Any) -> _Upload:
        """Upload ``uid``, begun by this request when it is new; refused when another session stages it."""
        if not isinstance(uid, str) or not _UPLOAD.match(uid):
            raise refusal(ErrorName.INVALID, f"{uid!r:.80} is not an upload id (8 to 32 hex digits)")
        upload = self.uploads.setdefault(uid, _Upload(uid, req.sid, self.volumes.staging))
        if upload.owner != req.sid:
            raise refusal(ErrorName.INVALID, f"upload {uid} belongs to another session")
        return upload

    def on_stage(self, req: Request[VolumeStageMsg]) -> None:
        msg = req.msg
        record = self.volumes.record(msg.oid)
        upload = self._upload(req, msg.upload)
        if len(req.payloads) != 1 or req.payloads[0].shm or len(req.payloads[0].frames) != 1:
            raise refusal(ErrorName.INVALID, "volume_stage carries one payload of one frame, its raw bytes, "
                          "not in shared memory")
        data = memoryview(framing.buffer_of(req.payloads[0].frames[0]))
        if data.nbytes > CHUNK_MAX_BYTES or msg.file < 0 or msg.offset < 0:
            raise refusal(ErrorName.INVALID, f"volume_stage takes chunks of at most {CHUNK_MAX_BYTES} bytes, "
                          "for a file number and an offset >= 0")
        upload.chunk_begins()

        def stage(tree: Tree) -> EmptyReply:
            try:
                self.volumes.staging.write(upload.uid, msg.file, msg.offset, data)
            finally:
                upload.chunk_ends()
            return EmptyReply()

        self._later(req, record, stage)

    def on_put(self, req: Request[VolumePutMsg]) -> None:
        msg = req.msg
        upload = self._upload(req, msg.upload)
        self.uploads.pop(upload.uid, None)
        upload.end()  # whatever comes of the put, its chunks go afterwards
        staging = self.volumes.staging
        try:
            record = self.volumes.record(msg.oid)
        except RequestError:
            staging.drop(upload.uid)
            raise

        def put(tree: Tree) -> EmptyReply:
            try:
                moves = [Move(staging.sized(upload.uid, f.file, f.size), parts(f.path), f.mode & 0o7777)
                         for f in msg.files]
                tree.place(staging.folder(upload.uid), moves, msg.force)
            finally:
                staging.drop(upload.uid)
            return EmptyReply()

        self._later(req, record, put)

    def on_abort(self, req: Request[VolumeAbortMsg]) -> None:
        upload = self._upload(req, req.msg.upload)
        self.uploads.pop(upload.uid, None)
        last = upload.end()

        def drop() -> EmptyReply:
            if last:
                self.volumes.staging.drop(upload.uid)
            return EmptyReply()

        answer_later(self.host, req, drop, f"upload {upload.uid}")

    def on_rm(self, req: Request[VolumeRmMsg]) -> None:
        msg = req.msg

        def remove(tree: Tree) -> EmptyReply:
            tree.remove(parts(msg.path), msg.recursive)
            return EmptyReply()

        self._later(req, self.volumes.record(msg.oid), remove)

    def on_copy(self, req: Request[VolumeCopyMsg]) -> None:
        msg = req.msg
        work = self.volumes.staging.folder(f"copy-{secrets.token_hex(8)}")

        def copy(tree: Tree) -> EmptyReply:
            try:
                tree.copy([parts(p) for p in msg.src_paths], parts(msg.dst_path), msg.recursive, work,
                          into=msg.dst_path.endswith("/"))
            finally:
                self.volumes.staging.drop(work.name)
            return EmptyReply()

        self._later(req, self.volumes.record(msg.oid), copy)

    def session_ended(self, sid: str) -> None:
        """What a session that went quiet had staged is dropped."""
        for upload in [u for u in self.uploads.values() if u.owner == sid]:
            del self.uploads[upload.uid]
            if upload.end():
                asyncio.get_running_loop().run_in_executor(None, self.volumes.staging.drop, upload.uid)
