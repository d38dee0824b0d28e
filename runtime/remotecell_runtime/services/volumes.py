"""Volumes: persistent folders on the runtime host (``STATE/volumes/NAME``), linked into containers.

A function's ``volumes`` option maps absolute paths to volume names; the daemon
resolves them at registration (creating a volume when asked) and the container
makes each path a symbolic link to its folder before it loads the function. The
daemon also lists a volume's files and reads one for clients: plain file bytes,
never unpickled.  Whatever the runtime refuses (a bad name or path, a missing
volume or file) is a ``RequestError``: ``not_found`` when it does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.message import Message
from ..protocol.messages.apps import VolumeLsMsg, VolumeLsReply, VolumeReadMsg, VolumeReadReply
from ..protocol.options import VolumeMount
from .base import Handler, Host, Request, RequestError, Service, refusal, with_id

READ_MAX_BYTES = 100 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as rc.Volume.from_name checks it


def _invalid(message: str) -> RequestError:
    return refusal(ErrorName.INVALID, message)


def _missing(message: str) -> RequestError:
    return refusal(ErrorName.NOT_FOUND, message)


@contextmanager
def _os_errors() -> Iterator[None]:
    """A folder the runtime could not make or read: refused, with what the OS said."""
    try:
        yield
    except OSError as exc:
        raise _invalid(f"volume: {exc}") from None


class Volumes(Service):
    """The volume folders, what a function's ``volumes`` option links, and the ``volume_*`` handlers."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.root = host.state_dir / "volumes"

    def handlers(self) -> dict[type[Message], Handler]:
        return {VolumeLsMsg: self.on_ls, VolumeReadMsg: self.on_read}

    def on_ls(self, req: Request[VolumeLsMsg]) -> VolumeLsReply:
        msg = req.msg
        with _os_errors():
            return VolumeLsReply(entries=self.listdir(msg.name, msg.create, msg.path))

    def on_read(self, req: Request[VolumeReadMsg]) -> None:
        """The file's bytes, raw, as the reply's one payload."""
        msg = req.msg
        with _os_errors():
            data = self.read(msg.name, msg.create, msg.path)
        self.host.send_peer(req.peer, framing.encode(with_id(VolumeReadReply(size=len(data)), req.id),
                                                     [Payload([data])]))

    def folder(self, name: Any, create: bool = False) -> Path:
        """The folder of volume ``name``, made when ``create``."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise _invalid(f"{name!r} is not a volume name")
        folder = self.root / name
        if not folder.is_dir():
            if not create:
                raise _missing(f"no volume {name!r} on this runtime; use rc.Volume.from_name({name!r}, "
                               "create_if_missing=True)")
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def mounts(self, option: dict[str, VolumeMount]) -> dict[str, str]:
        """A function's ``volumes`` option -> ``{path: host folder}``."""
        mounts = {}
        for path, volume in option.items():
            if not path.startswith("/") or path.rstrip("/") == "":
                raise _invalid(f"volume path {path!r} must be absolute and below /")
            with _os_errors():
                mounts[path] = str(self.folder(volume.name, volume.create))
        return mounts

    def _inside(self, name: Any, create: bool, path: Any) -> Path:
        folder = self.folder(name, create).resolve()
        target = (folder / str(path or "").lstrip("/")).resolve()
        if target != folder and folder not in target.parents:
            raise _invalid(f"{path!r} is outside volume {name!r}")
        return target

    def listdir(self, name: Any, create: bool, path: Any) -> list[dict[str, Any]]:
        target = self._inside(name, create, path)
        if not target.exists():
            raise _missing(f"no {path!r} in volume {name!r}")
        folder = self.folder(name).resolve()
        entries = sorted(target.iterdir()) if target.is_dir() else [target]
        return [{"path": str(e.relative_to(folder)), "type": "dir" if e.is_dir() else "file",
                 "size": e.stat().st_size if e.is_file() else 0} for e in entries]

    def read(self, name: Any, create: bool, path: Any) -> bytes:
        target = self._inside(name, create, path)
        if not target.is_file():
            raise _missing(f"no file {path!r} in volume {name!r}")
        size = target.stat().st_size
        if size > READ_MAX_BYTES:
            raise _invalid(f"{path!r} is {size} bytes; read_file reads at most {READ_MAX_BYTES} "
                           "(read it from a function with the volume mounted)")
        return target.read_bytes()
