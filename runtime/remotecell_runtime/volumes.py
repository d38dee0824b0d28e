"""Volumes: persistent folders on the runtime host (``STATE/volumes/NAME``), linked into containers.

A function's ``volumes`` option maps absolute paths to volume names; the daemon
resolves them at registration (creating a volume when asked) and the container
makes each path a symbolic link to its folder before it loads the function. The
daemon also lists a volume's files and reads one for clients: plain file bytes,
never unpickled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

READ_MAX_BYTES = 100 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as rc.Volume.from_name checks it


class VolumeError(Exception):
    """A volume request the runtime refuses; ``missing``: the volume or file does not exist."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class Volumes:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "volumes"

    def folder(self, name: Any, create: bool = False) -> Path:
        """The folder of volume ``name``, made when ``create``."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise VolumeError(f"{name!r} is not a volume name")
        folder = self.root / name
        if not folder.is_dir():
            if not create:
                raise VolumeError(f"no volume {name!r} on this runtime; use rc.Volume.from_name({name!r}, "
                                  "create_if_missing=True)", missing=True)
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def mounts(self, option: Any) -> dict[str, str]:
        """``{path: {"name", "create"}}`` of a function's options -> ``{path: host folder}``."""
        if not isinstance(option, dict):
            raise VolumeError("volumes must be {absolute path: {'name': NAME, 'create': bool}}")
        mounts = {}
        for path, spec in option.items():
            if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == "":
                raise VolumeError(f"volume path {path!r} must be absolute and below /")
            if not isinstance(spec, dict):
                raise VolumeError(f"volume at {path!r} must be {{'name': NAME, 'create': bool}}")
            mounts[path] = str(self.folder(spec.get("name"), bool(spec.get("create"))))
        return mounts

    def _inside(self, name: Any, create: bool, path: Any) -> Path:
        folder = self.folder(name, create).resolve()
        target = (folder / str(path or "").lstrip("/")).resolve()
        if target != folder and folder not in target.parents:
            raise VolumeError(f"{path!r} is outside volume {name!r}")
        return target

    def listdir(self, name: Any, create: bool, path: Any) -> list[dict[str, Any]]:
        target = self._inside(name, create, path)
        if not target.exists():
            raise VolumeError(f"no {path!r} in volume {name!r}", missing=True)
        folder = self.folder(name).resolve()
        entries = sorted(target.iterdir()) if target.is_dir() else [target]
        return [{"path": str(e.relative_to(folder)), "type": "dir" if e.is_dir() else "file",
                 "size": e.stat().st_size if e.is_file() else 0} for e in entries]

    def read(self, name: Any, create: bool, path: Any) -> bytes:
        target = self._inside(name, create, path)
        if not target.is_file():
            raise VolumeError(f"no file {path!r} in volume {name!r}", missing=True)
        size = target.stat().st_size
        if size > READ_MAX_BYTES:
            raise VolumeError(f"{path!r} is {size} bytes; read_file reads at most {READ_MAX_BYTES} "
                              "(read it from a function with the volume mounted)")
        return target.read_bytes()
