"""Volumes: named and ephemeral folders of the runtime host, and their files (Modal's ``Volume`` file API).

A client first opens a volume (``volume_open`` by name or id, ``volume_ephemeral``)
and gets its id (``oid``); every file request names the volume by that id, so a
volume deleted and made again under the same name is not the one an old handle
meant.  File bytes travel as raw payloads, never pickled, in chunks of at most
``CHUNK_BYTES``: a read is one request per chunk (``offset``, and the file's
``version`` from the first chunk, so a file replaced mid-read is refused, not
spliced), an upload stages each file's chunks (``volume_stage``) and then places
them all at once (``volume_put``).  Paths are relative to the volume's root (a
leading ``/`` is allowed); the runtime keeps them inside it.
"""

from __future__ import annotations

import enum

from ..message import Message, message, wire

CHUNK_BYTES = 8 << 20  # one read or staged chunk: a 1 GB file is 128 messages, none of them large
CHUNK_MAX_BYTES = 16 << 20  # what the runtime takes in one volume_stage
LS_BATCH = 1000  # entries per message of a listing: a large tree streams as items

Parts = tuple[str, ...]


class VolumePathError(ValueError):
    """A path the volume file API refuses: outside the volume, through a link, of the wrong kind."""


def parts(path: str) -> Parts:
    """``path`` (relative to the volume's root; a leading ``/`` is the root) as its components.

    >>> parts("/models/../weights/a.bin")
    ('weights', 'a.bin')
    """
    if not isinstance(path, str) or "\0" in path:
        raise VolumePathError(f"{path!r:.80} is not a path")
    out: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if not out:
                raise VolumePathError(f"{path!r} is outside the volume: paths are relative to its root")
            out.pop()
        elif part not in ("", "."):
            out.append(part)
    return tuple(out)


class FileEntryType(enum.IntEnum):
    """What a listed path is (Modal's ``modal.volume.FileEntryType``, with its numbers)."""

    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5


# -- volumes ---------------------------------------------------------------------------------


@message("volume_open")
class VolumeOpenMsg(Message):
    """A volume by ``name`` (made when ``create``; ``exclusive``: refused when it exists) or by its ``oid``."""

    name: str | None = None
    oid: str | None = None
    create: bool = False
    exclusive: bool = False


@message("volume_ephemeral")
class VolumeEphemeralMsg(Message):
    """A new volume without a name, owned by the envelope's session: deleted when it ends (or asked)."""


@message("reply")
class VolumeInfoReply(Message):
    oid: str
    name: str | None
    created_at: float  # seconds since the epoch


@message("volume_list")
class VolumeListMsg(Message):
    """The named volumes, newest first."""


@message("reply")
class VolumeListReply(Message):
    volumes: list[VolumeInfoReply]


@message("volume_delete")
class VolumeDeleteMsg(Message):
    """Delete a volume and all its files: by ``name``, or by ``oid`` (an ephemeral one's end)."""

    name: str | None = None
    oid: str | None = None
    allow_missing: bool = False


# -- files -----------------------------------------------------------------------------------


@message()
class VolumeEntry(Message):
    """One listed path: relative to the volume's root, its ``FileEntryType``, mtime (s) and size (files)."""

    path: str
    type: int
    mtime: int
    size: int


@message("volume_ls")
class VolumeLsMsg(Message):
    """The entries under ``path`` (a file: itself); all of them below it when ``recursive``.

    Answered by ``item`` messages of ``LS_BATCH`` entries while more follow, then the reply with the rest.
    """

    oid: str
    path: str = "/"
    recursive: bool = False


@message("item")
class VolumeLsItem(Message):
    entries: list[VolumeEntry]


@message("reply")
class VolumeLsReply(Message):
    entries: list[VolumeEntry]


@message("volume_read")
class VolumeReadMsg(Message):
    """``length`` bytes of a file from ``offset``, as the reply's one raw payload; ``version``: the one the
    first chunk's reply gave (a file that changed since is refused)."""

    oid: str
    path: str
    offset: int = 0
    length: int = CHUNK_BYTES
    version: str | None = None


@message("reply")
class VolumeReadReply(Message):
    size: int  # the whole file's
    version: str


@message("volume_stage")
class VolumeStageMsg(Message):
    """One chunk (the one raw payload) of file number ``file`` of upload ``upload``, at ``offset``."""

    oid: str
    upload: str  # the client's id for one batch upload: hex digits
    file: int
    offset: int = 0


@message()
class StagedFile(Message):
    """Where a staged file goes: ``path`` in the volume, with ``mode``; ``size``: all its chunks together."""

    file: int
    path: str
    size: int
    mode: int = 0o644


@message("volume_put")
class VolumePutMsg(Message):
    """Place the staged files of ``upload``: each one whole (written aside, then renamed into place).

    Without ``force`` a path that exists fails the whole put and nothing is placed; a directory is never
    overwritten.  Either way the upload's staged chunks are gone afterwards.
    """

    oid: str
    upload: str
    files: list[StagedFile] = wire(factory=list)
    force: bool = False


@message("volume_abort")
class VolumeAbortMsg(Message):
    """Drop what upload ``upload`` staged (it failed on the client)."""

    upload: str


@message("volume_rm")
class VolumeRmMsg(Message):
    oid: str
    path: str
    recursive: bool = False


@message("volume_copy")
class VolumeCopyMsg(Message):
    """Copy within the volume as ``cp`` does: several sources need ``dst_path`` to be a directory."""

    oid: str
    src_paths: list[str]
    dst_path: str
    recursive: bool = False
