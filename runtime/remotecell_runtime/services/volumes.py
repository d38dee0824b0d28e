"""Volumes: persistent folders on the runtime host, mounted into containers, each known by name and by id.

Layout under ``STATE/volumes`` (a name starts with a letter or digit, so none meets a dot folder):

- ``NAME/``: a named volume's files, what its containers see at its mount path;
  ``.meta/NAME.json`` its id and creation time (written atomically; made for a folder
  an older runtime left without one);
- ``.ephemeral/OID/``: an ephemeral volume's files, ``.ephemeral/OID.json`` the session
  that owns it: deleted when that session ends or goes quiet;
- ``.staging/``: uploads and copies on their way in (``volume_tree.Staging``); ``.trash/``:
  deleted volumes while a worker thread removes them.  Both are emptied at start.

A function's ``volumes`` option names each volume (or an ephemeral one's id); the
daemon resolves it at registration (making a volume when asked) into
``REMOTECELL_VOLUMES`` (JSON ``{path: folder}``), which the sandbox mounts (or, without
one, the container links).  Deleting a volume renames its folder away at once (the
name is free again), so a new volume of that name is a new folder with a new id.
The file requests are ``services/volume_files.py``'s.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.errors import ErrorName
from ..protocol.message import Message
from ..protocol.messages.session import EmptyReply
from ..protocol.messages.volumes import (
    VolumeDeleteMsg,
    VolumeEphemeralMsg,
    VolumeInfoReply,
    VolumeListMsg,
    VolumeListReply,
    VolumeOpenMsg,
)
from ..protocol.options import VolumeMount
from ..volume_tree import Staging
from .base import Handler, Host, Request, RequestError, Service, refusal

log = logging.getLogger("remotecell.volumes")

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


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """``value`` as the file ``path``, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    staging.write_text(json.dumps(value))
    os.replace(staging, path)


@dataclass
class VolumeRecord:
    """One volume: its id, its name (None: ephemeral), its folder, when it was made, its owner session."""

    oid: str
    name: str | None
    folder: Path
    created_at: float
    owner: str | None = None  # the session an ephemeral volume belongs to

    def info(self) -> VolumeInfoReply:
        return VolumeInfoReply(oid=self.oid, name=self.name, created_at=self.created_at)

    def label(self) -> str:
        """How messages name it."""
        return repr(self.name) if self.name is not None else f"{self.oid} (ephemeral)"


class Volumes(Service):
    """The volumes of this runtime (``records`` by id), what a function's ``volumes`` option mounts, and the
    ``volume_open``/``volume_ephemeral``/``volume_list``/``volume_delete`` handlers."""

    def __init__(self, host: Host, orphan_grace_s: float = 60.0) -> None:
        self.host = host
        self.root = host.state_dir / "volumes"
        self.meta = self.root / ".meta"
        self.ephemeral_root = self.root / ".ephemeral"
        self.trash = self.root / ".trash"
        self.staging = Staging(self.root / ".staging")
        self.records: dict[str, VolumeRecord] = {}
        self.by_name: dict[str, str] = {}  # name -> oid
        # After a restart, clients need a moment to say they are still there.
        self.sweep_after = time.monotonic() + orphan_grace_s
        self.staging.clear()
        shutil.rmtree(self.trash, ignore_errors=True)
        with _os_errors():
            self._load()

    def handlers(self) -> dict[type[Message], Handler]:
        return {VolumeOpenMsg: self.on_open, VolumeEphemeralMsg: self.on_ephemeral, VolumeListMsg: self.on_list,
                VolumeDeleteMsg: self.on_delete}

    # -- the records --------------------------------------------------------------------------

    def _load(self) -> None:
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder.is_dir() and _NAME.match(folder.name):
                    self._add(self._named_record(folder))
        if self.ephemeral_root.is_dir():
            for meta in sorted(self.ephemeral_root.glob("*.json")):
                folder = meta.with_suffix("")
                saved = json.loads(meta.read_text())
                self._add(VolumeRecord(folder.name, None, folder, saved["created_at"], saved["owner"]))

    def _named_record(self, folder: Path) -> VolumeRecord:
        meta = self.meta / f"{folder.name}.json"
        if not meta.is_file():  # a volume of a runtime that kept no ids
            _write_json(meta, {"oid": _new_oid(), "created_at": folder.stat().st_mtime})
        saved = json.loads(meta.read_text())
        return VolumeRecord(saved["oid"], folder.name, folder, saved["created_at"])

    def _add(self, record: VolumeRecord) -> VolumeRecord:
        self.records[record.oid] = record
        if record.name is not None:
            self.by_name[record.name] = record.oid
        return record

    def record(self, oid: Any) -> VolumeRecord:
        """The volume of id ``oid``, or a refusal saying it is gone."""
        record = self.records.get(oid) if isinstance(oid, str) else None
        if record is None:
            raise _missing(f"no volume {oid!r} on this runtime: it was deleted, or it was ephemeral and its "
                           "`with rc.Volume.ephemeral()` block (or its client) ended")
        return record

    def named(self, name: Any, create: bool = False) -> VolumeRecord:
        """The volume ``name``, made when ``create``."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise _invalid(f"{name!r} is not a volume name (1 to 64 letters, digits, '_', '-' or '.', "
                           "starting with a letter or digit)")
        oid = self.by_name.get(name)
        if oid is not None:
            return self.records[oid]
        if not create:
            raise _missing(f"no volume {name!r} on this runtime; make it with rc.Volume.from_name({name!r}, "
                           f"create_if_missing=True) or `remotecell volume create {name}`")
        with _os_errors():
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            created = time.time()
            record = VolumeRecord(_new_oid(), name, folder, created)
            _write_json(self.meta / f"{name}.json", {"oid": record.oid, "created_at": created})
        log.info("made volume %s (%s)", name, record.oid)
        return self._add(record)

    def mounts(self, option: dict[str, VolumeMount]) -> dict[str, str]:
        """A function's ``volumes`` option -> ``{path: host folder}``."""
        mounts = {}
        for path, volume in option.items():
            if not path.startswith("/") or path.rstrip("/") == "":
                raise _invalid(f"volume path {path!r} must be absolute and below /")
            record = self.record(volume.oid) if volume.oid is not None else self.named(volume.name, volume.create)
            mounts[path] = str(record.folder)
        return mounts

    def delete(self, record: VolumeRecord) -> None:
        """Delete the volume: its folder renamed away now (its name is free at once), removed on a thread."""
        with _os_errors():
            self.trash.mkdir(parents=True, exist_ok=True)
            gone = self.trash / f"{record.oid}-{secrets.token_hex(4)}"
            record.folder.rename(gone)
            meta = self.meta / f"{record.name}.json" if record.name is not None else record.folder.with_suffix(".json")
            meta.unlink(missing_ok=True)
        del self.records[record.oid]
        if record.name is not None:
            self.by_name.pop(record.name, None)
        log.info("deleted volume %s", record.label())
        _remove_soon(gone)

    # -- handlers -----------------------------------------------------------------------------

    def on_open(self, req: Request[VolumeOpenMsg]) -> VolumeInfoReply:
        msg = req.msg
        if msg.oid is not None:
            return self.record(msg.oid).info()
        if msg.exclusive and msg.name in self.by_name:
            raise refusal(ErrorName.ALREADY_EXISTS, f"volume {msg.name!r} exists already; use it with "
                          f"rc.Volume.from_name({msg.name!r}), or pass allow_existing=True")
        return self.named(msg.name, msg.create or msg.exclusive).info()

    def on_ephemeral(self, req: Request[VolumeEphemeralMsg]) -> VolumeInfoReply:
        oid = _new_oid()
        folder = self.ephemeral_root / oid
        created = time.time()
        with _os_errors():
            folder.mkdir(parents=True)
            _write_json(folder.with_suffix(".json"), {"owner": req.sid, "created_at": created})
        return self._add(VolumeRecord(oid, None, folder, created, req.sid)).info()

    def on_list(self, req: Request[VolumeListMsg]) -> VolumeListReply:
        named = [self.records[oid] for oid in self.by_name.values()]
        return VolumeListReply(volumes=[r.info() for r in sorted(named, key=lambda r: -r.created_at)])

    def on_delete(self, req: Request[VolumeDeleteMsg]) -> EmptyReply:
        msg = req.msg
        try:
            record = self.record(msg.oid) if msg.oid is not None else self.named(msg.name)
        except RequestError as exc:
            if msg.allow_missing and exc.type_name == ErrorName.NOT_FOUND:
                return EmptyReply()
            raise
        self.delete(record)
        return EmptyReply()

    def tick(self, now: float) -> None:
        """Delete the ephemeral volumes of sessions that went quiet."""
        if now < self.sweep_after:
            return
        live = self.host.live_sessions()
        for record in [r for r in self.records.values() if r.owner is not None and r.owner not in live]:
            log.info("deleting ephemeral volume %s: its client session %s ended", record.oid, record.owner)
            self.delete(record)


def _new_oid() -> str:
    return f"vo-{secrets.token_hex(8)}"


def _remove_soon(folder: Path) -> None:
    """A deleted volume's files go on a worker thread (a large one takes a while); without a loop, now."""
    try:
        asyncio.get_running_loop().run_in_executor(None, functools.partial(shutil.rmtree, folder, ignore_errors=True))
    except RuntimeError:
        shutil.rmtree(folder, ignore_errors=True)
