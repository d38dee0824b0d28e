"""Volumes, as Modal's ``modal.Volume``: persistent folders on the runtime host, mounted at a function's paths.

>>> vol = rc.Volume.from_name("models", create_if_missing=True)
>>> @app.function(volumes={"/srv/models": vol})
... def save(name, data):
...     open(f"/srv/models/{name}", "wb").write(data)
>>> with vol.batch_upload() as batch:               # from here, without mounting it
...     batch.put_file("weights.bin", "/weights.bin")
>>> [e.path for e in vol.listdir("/")]
['weights.bin']
>>> b"".join(vol.read_file("weights.bin"))         # chunks, however large the file

A handle is lazy, as Modal's: ``from_name`` sends nothing; the first use finds the
volume (``hydrate``) and keeps its id (``object_id``), so a volume deleted and made
again under the name is not the one an old handle meant.  Every blocking method has
an ``.aio`` twin (``await vol.listdir.aio("/")``, ``async for chunk in
vol.read_file.aio(p)``, ``async with vol.batch_upload.aio() as b``).  File bytes travel
in chunks of ``CHUNK_BYTES`` with a few in flight, never pickled; an upload is placed
only when the ``batch_upload`` block ends without an error, each file whole.
Errors are Modal's: ``NotFoundError`` for a missing volume, ``FileNotFoundError`` for a
missing file, ``FileExistsError`` for an upload over a file without ``force``
(``remotecell.exceptions.VolumeFileNotFoundError`` / ``VolumeFileExistsError``, which
are both).  Every container of the host sees the same files at once: ``commit`` and
``reload`` are there for Modal code and do nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import os
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, ClassVar

from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.messages.session import EmptyReply
from remotecell_runtime.protocol.messages.volumes import (
    CHUNK_BYTES,
    FileEntryType,
    StagedFile,
    VolumeAbortMsg,
    VolumeCopyMsg,
    VolumeDeleteMsg,
    VolumeEntry,
    VolumeEphemeralMsg,
    VolumeInfoReply,
    VolumeListMsg,
    VolumeListReply,
    VolumeLsItem,
    VolumeLsMsg,
    VolumeLsReply,
    VolumeOpenMsg,
    VolumePutMsg,
    VolumeReadMsg,
    VolumeReadReply,
    VolumeRmMsg,
    VolumeStageMsg,
)

from . import _bridge, _client
from ._bridge import Twin, TwinMethod, twin_context, twin_iterator
from .exceptions import InvalidError

__all__ = ["FileEntry", "FileEntryType", "Volume", "VolumeInfo", "VolumeManager", "VolumeUpload"]

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IN_FLIGHT = 4  # chunks on their way at once, each way: 32 MiB


@dataclass(frozen=True)
class FileEntry:
    """A file or directory listed from a volume (Modal's ``modal.volume.FileEntry``)."""

    path: str  # relative to the volume's root
    type: FileEntryType
    mtime: int  # seconds since the epoch
    size: int  # bytes (0 for a directory)

    @staticmethod
    def of(entry: VolumeEntry) -> FileEntry:
        return FileEntry(entry.path, FileEntryType(entry.type), entry.mtime, entry.size)


@dataclass(frozen=True)
class VolumeInfo:
    """What ``Volume.info()`` says (Modal's ``VolumeInfo``)."""

    name: str | None
    created_at: datetime.datetime
    created_by: str | None = None  # the runtime has no accounts


def _checked_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not VOLUME_NAME.match(name):
        raise InvalidError(f"{where}({name!r}): a volume name is 1 to 64 letters, digits, '_', '-' or '.', "
                           "starting with a letter or digit")
    return name


def _data(payloads: list[Payload]) -> bytes:
    return b"".join(bytes(framing.buffer_of(f)) for f in payloads[0].frames) if payloads else b""


async def _ask(msg: Any, answer: type[Any], payloads: list[Payload] | None = None) -> tuple[Any, list[Payload]]:
    return await _client.connection().ask_aio(msg, answer, payloads or [])


class Volume:
    """A persistent directory on the runtime host, mounted at a path of the function's choosing in its containers.

    ``Volume.from_name(name, create_if_missing=False)``, ``Volume.from_id(object_id)``,
    ``with Volume.ephemeral() as vol:`` (deleted when the block ends), ``Volume.objects``
    (``create``, ``list``, ``delete``); the file API: ``listdir``, ``iterdir``, ``read_file``,
    ``read_file_into_fileobj``, ``remove_file``, ``copy_files``, ``batch_upload``.
    """

    objects: ClassVar[VolumeManager]  # set below: Modal's ``modal.Volume.objects``
    ephemeral: ClassVar[Twin]  # set below: ``with rc.Volume.ephemeral() as vol:``

    def __init__(self, name: str | None = None, create_if_missing: bool = False, *, object_id: str | None = None,
                 created_at: float | None = None) -> None:
        self._name = name
        self._create = create_if_missing
        self._oid = object_id
        self._created_at = created_at

    @staticmethod
    def from_name(name: str, *, create_if_missing: bool = False) -> Volume:
        """The volume ``name``; it must exist on the runtime unless ``create_if_missing`` (checked on first use)."""
        return Volume(_checked_name(name, "Volume.from_name"), create_if_missing)

    @staticmethod
    def from_id(volume_id: str) -> Volume:
        """The volume whose ``object_id`` is ``volume_id`` (an ephemeral one's, handed to a function, say)."""
        if not isinstance(volume_id, str) or not volume_id.startswith("vo-"):
            raise InvalidError(f"Volume.from_id({volume_id!r}): a volume id is what vol.object_id gives (vo-...)")
        return Volume(object_id=volume_id)

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def object_id(self) -> str:
        """The volume's id on the runtime (found on first use; in async code ``await vol.hydrate.aio()`` first)."""
        return self._oid if self._oid is not None else _bridge.run(self._id())

    async def _hydrate(self) -> Volume:
        """Find the volume on the runtime (made there when ``create_if_missing``); returns the handle itself."""
        if self._oid is None or self._created_at is None:
            msg = VolumeOpenMsg(name=self._name, create=self._create) if self._oid is None else \
                VolumeOpenMsg(oid=self._oid)
            reply, _ = await _ask(msg, VolumeInfoReply)
            self._oid, self._name, self._created_at = reply.oid, reply.name, reply.created_at
        return self

    async def _id(self) -> str:
        if self._oid is None:
            await self._hydrate()
        assert self._oid is not None
        return self._oid

    hydrate = TwinMethod(_hydrate)

    async def _info(self) -> VolumeInfo:
        """The volume's name and when it was made."""
        await self._hydrate()
        assert self._created_at is not None
        return VolumeInfo(self._name, datetime.datetime.fromtimestamp(self._created_at).astimezone())

    info = TwinMethod(_info)

    async def _iterdir(self, path: str, *, recursive: bool = True) -> AsyncIterator[FileEntry]:
        """The entries under ``path`` as they come (a file: itself); every one below it when ``recursive``.

        Paths are relative to the volume's root.  ``for entry in vol.iterdir("/")``.
        """
        if isinstance(path, str) and path.endswith("*"):
            raise InvalidError(f"iterdir({path!r}): glob patterns are not supported; list the folder "
                               "(recursive=True for everything below it)")
        conn = _client.connection()
        header = conn.envelope(VolumeLsMsg(oid=await self._id(), path=path, recursive=recursive))
        async for reply, _ in conn.async_channel().stream(header):
            answer = VolumeLsItem if reply.get("t") == "item" else VolumeLsReply
            for entry in answer.from_wire(reply).entries:
                yield FileEntry.of(entry)

    iterdir = TwinMethod(_iterdir, twin_iterator)

    async def _listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        """The entries under ``path`` (a file: itself), as a list; every one below it when ``recursive``."""
        return [entry async for entry in self._iterdir(path, recursive=recursive)]

    listdir = TwinMethod(_listdir)

    async def _chunk(self, path: str, offset: int, version: str | None) -> tuple[bytes, VolumeReadReply]:
        msg = VolumeReadMsg(oid=await self._id(), path=path, offset=offset, length=CHUNK_BYTES, version=version)
        reply, payloads = await _ask(msg, VolumeReadReply)
        return _data(payloads), reply

    async def _read_file(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk (``CHUNK_BYTES``, a few read ahead): ``b"".join(vol.read_file(p))``."""
        data, head = await self._chunk(path, 0, None)
        offsets = iter(range(CHUNK_BYTES, head.size, CHUNK_BYTES))
        ahead: deque[asyncio.Task[tuple[bytes, VolumeReadReply]]] = deque()
        try:
            while True:
                for offset in offsets:  # the next chunks are asked for before this one is handed on
                    ahead.append(asyncio.ensure_future(self._chunk(path, offset, head.version)))
                    if len(ahead) == IN_FLIGHT:
                        break
                if data:
                    yield data
                if not ahead:
                    return
                data, _ = await ahead.popleft()
        finally:
            _cancel(ahead)

    read_file = TwinMethod(_read_file, twin_iterator)

    async def _read_file_into_fileobj(self, path: str, fileobj: IO[bytes],
                                      progress_cb: Callable[..., Any] | None = None) -> int:
        """Write the file's bytes into ``fileobj`` (open for writing in binary); returns how many."""
        total = 0
        async for chunk in self._read_file(path):
            fileobj.write(chunk)
            total += len(chunk)
            if progress_cb is not None:
                progress_cb(advance=len(chunk))
        return total

    read_file_into_fileobj = TwinMethod(_read_file_into_fileobj)

    async def _remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file (or link), or a directory and all in it when ``recursive``."""
        await _ask(VolumeRmMsg(oid=await self._id(), path=path, recursive=recursive), EmptyReply)

    remove_file = TwinMethod(_remove_file)

    async def _copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        """Copy within the volume as ``cp`` does: ``vol.copy_files(["a.txt"], "b.txt")``, several paths into a
        directory (``"dir/"``: made when missing), a directory with ``recursive=True``."""
        if isinstance(src_paths, str) or not all(isinstance(p, str) for p in src_paths):
            raise InvalidError(f"copy_files({src_paths!r}, ...): give a list of paths, e.g. ['a.txt']")
        await _ask(VolumeCopyMsg(oid=await self._id(), src_paths=list(src_paths), dst_path=dst_path,
                                 recursive=recursive), EmptyReply)

    copy_files = TwinMethod(_copy_files)

    @contextlib.asynccontextmanager
    async def _batch_upload(self, force: bool = False) -> AsyncIterator[VolumeUpload]:
        """``with vol.batch_upload() as batch: batch.put_file(...); batch.put_directory(...)``: the files go when
        the block ends without an error; an existing file is a ``FileExistsError`` unless ``force``."""
        batch = VolumeUpload(self, force)
        yield batch  # an error in the block skips the upload: nothing was sent
        await batch.send()

    batch_upload = TwinMethod(_batch_upload, twin_context)

    async def _commit(self) -> None:
        """Nothing to do: writes are on the runtime host's disk, seen by every container at once."""

    async def _reload(self) -> None:
        """Nothing to do: see ``commit``."""

    commit = TwinMethod(_commit)
    reload = TwinMethod(_reload)

    def to_wire(self) -> dict[str, Any]:
        """As a function's ``volumes`` option names it."""
        if self._name is not None:
            return {"name": self._name, "create": self._create}
        return {"oid": self._oid}

    def __reduce__(self) -> Any:  # into a container: the same volume, found there again by name (or id)
        return (Volume, (self._name, self._create), {"_oid": None if self._name is not None else self._oid})

    def __repr__(self) -> str:
        if self._name is not None:
            return f"Volume.from_name({self._name!r})"
        return f"Volume.from_id({self._oid!r})"


def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Stop what is in flight; an error already there is read (so asyncio does not report it as unseen)."""
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
        task.cancel()


@contextlib.asynccontextmanager
async def _ephemeral() -> AsyncIterator[Volume]:
    """``with rc.Volume.ephemeral() as vol:``: a volume without a name, deleted when the block ends (or when
    this client goes away)."""
    reply, _ = await _ask(VolumeEphemeralMsg(), VolumeInfoReply)
    volume = Volume(object_id=reply.oid, created_at=reply.created_at)
    try:
        yield volume
    finally:
        await _ask(VolumeDeleteMsg(oid=reply.oid, allow_missing=True), EmptyReply)


Volume.ephemeral = twin_context(_ephemeral)


@dataclass(frozen=True)
class _Source:
    """One file of an upload: a local path or an open binary file, where it goes, its mode."""

    local: Path | IO[bytes]
    remote: str
    mode: int | None

    @contextlib.contextmanager
    def opened(self) -> Any:
        if isinstance(self.local, Path):
            with open(self.local, "rb") as f:
                yield f
        else:
            yield self.local  # the caller's: it stays open

    def file_mode(self) -> int:
        if self.mode is not None:
            return self.mode
        return os.stat(self.local).st_mode & 0o777 if isinstance(self.local, Path) else 0o644


class VolumeUpload:
    """What ``batch_upload()`` gives: ``put_file`` and ``put_directory`` say what to upload; it is sent at the
    end of the block (each file in chunks, a few in flight), then placed in the volume all together."""

    def __init__(self, volume: Volume, force: bool) -> None:
        self.volume = volume
        self.force = force
        self._sources: list[Callable[[], Iterable[_Source]]] = []  # expanded when sent

    def put_file(self, local_file: Path | str | IO[bytes], remote_path: PurePosixPath | str,
                 mode: int | None = None) -> None:
        """Upload a local file (a path, or a binary file object that stays readable until the block ends) to
        ``remote_path``; the folders it needs are made."""
        if str(remote_path).endswith("/"):
            raise ValueError(f"remote_path ({remote_path}) must refer to a file - cannot end with /")
        local = Path(local_file) if isinstance(local_file, (str, Path)) else local_file
        source = _Source(local, PurePosixPath(remote_path).as_posix(), mode)
        self._sources.append(lambda: [source])

    def put_directory(self, local_path: Path | str, remote_path: PurePosixPath | str, recursive: bool = True) -> None:
        """Upload every file of a local directory (of its subdirectories too when ``recursive``) under
        ``remote_path``."""
        local = Path(local_path)
        if not local.is_dir():
            raise NotADirectoryError(f"put_directory: {local} is not a directory")
        remote = PurePosixPath(remote_path)

        def files() -> list[_Source]:
            found = local.rglob("*") if recursive else local.glob("*")
            return [_Source(p, (remote / p.relative_to(local)).as_posix(), None) for p in sorted(found) if p.is_file()]

        self._sources.append(files)

    async def send(self) -> None:
        """Stage every file's chunks on the runtime, then place them; on any failure, drop what was staged."""
        oid = await self.volume._id()
        upload = secrets.token_hex(8)
        try:
            staged = await _Stager(oid, upload).stage([s for found in self._sources for s in found()])
            await _ask(VolumePutMsg(oid=oid, upload=upload, files=staged, force=self.force), EmptyReply)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort: the runtime drops it with the session anyway
                await asyncio.shield(_ask(VolumeAbortMsg(upload=upload), EmptyReply))
            raise


class _Stager:
    """The chunks of one upload on their way: at most ``IN_FLIGHT`` at once, across its files."""

    def __init__(self, oid: str, upload: str) -> None:
        self.oid = oid
        self.upload = upload
        self.window = asyncio.Semaphore(IN_FLIGHT)
        self.sending: set[asyncio.Task[Any]] = set()

    async def stage(self, sources: list[_Source]) -> list[StagedFile]:
        try:
            staged = [await self._file(i, source) for i, source in enumerate(sources)]
            await asyncio.gather(*self.sending)
        finally:
            _cancel(self.sending)
        return staged

    async def _file(self, index: int, source: _Source) -> StagedFile:
        size = 0
        with source.opened() as f:
            while data := await asyncio.to_thread(f.read, CHUNK_BYTES):
                await self.window.acquire()
                self._check()
                msg = VolumeStageMsg(oid=self.oid, upload=self.upload, file=index, offset=size)
                task = asyncio.ensure_future(_ask(msg, EmptyReply, [Payload([data])]))
                task.add_done_callback(self._sent)
                self.sending.add(task)
                size += len(data)
        return StagedFile(file=index, path=source.remote, size=size, mode=source.file_mode())

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self.window.release()
        if not task.cancelled() and task.exception() is None:
            self.sending.discard(task)  # a failed one stays, for _check to raise

    def _check(self) -> None:
        for task in self.sending:
            if task.done():
                task.result()


class VolumeManager:
    """``rc.Volume.objects``: the runtime's named volumes (Modal's ``modal.Volume.objects``)."""

    async def _create(self, name: str, *, allow_existing: bool = False) -> None:
        """Make the volume ``name``; ``AlreadyExistsError`` when it exists, unless ``allow_existing``."""
        msg = VolumeOpenMsg(name=_checked_name(name, "Volume.objects.create"), create=True,
                            exclusive=not allow_existing)
        await _ask(msg, VolumeInfoReply)

    async def _list(self, *, max_objects: int | None = None,
                    created_before: datetime.datetime | str | None = None) -> builtins.list[Volume]:
        """The named volumes, newest first, as handles."""
        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects cannot be negative")
        reply, _ = await _ask(VolumeListMsg(), VolumeListReply)
        before = _timestamp(created_before)
        found = [Volume(v.name, object_id=v.oid, created_at=v.created_at) for v in reply.volumes
                 if before is None or v.created_at < before]
        return found[:max_objects] if max_objects is not None else found

    async def _delete(self, name: str, *, allow_missing: bool = False) -> None:
        """Delete the volume ``name`` and every file in it (irreversible; functions that mount it lose them)."""
        msg = VolumeDeleteMsg(name=_checked_name(name, "Volume.objects.delete"), allow_missing=allow_missing)
        await _ask(msg, EmptyReply)

    create = TwinMethod(_create)
    list = TwinMethod(_list)
    delete = TwinMethod(_delete)


def _timestamp(when: datetime.datetime | str | None) -> float | None:
    if when is None:
        return None
    moment = datetime.datetime.fromisoformat(when) if isinstance(when, str) else when
    return moment.timestamp()


Volume.objects = VolumeManager()
