"""Infrastructure declared in code: secrets (environment variables) and volumes (``images`` has the images)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.messages.apps import VolumeLsMsg, VolumeLsReply, VolumeReadMsg, VolumeReadReply

from . import _client
from ._bridge import Twin, twin
from .exceptions import InvalidError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VOLUME_NAME = SECRET_NAME


@dataclass(frozen=True)
class Secret:
    """Environment variables for a function's containers, given here or stored on the runtime host.

    >>> @app.function(secrets=[rc.Secret.from_name("openai"), rc.Secret.from_dict({"MODE": "fast"})])
    ... def ask(q): return os.environ["OPENAI_API_KEY"], os.environ["MODE"]

    A named secret is created on the runtime host with
    ``remotecell secret create openai OPENAI_API_KEY=...``; it is read when the
    function is registered. Later secrets in the list win over earlier ones, and
    all of them over ``env=``.
    """

    values: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    @staticmethod
    def from_dict(values: Mapping[str, str]) -> Secret:
        """Variables given here; they travel to the runtime with the function's options."""
        if not isinstance(values, Mapping):
            raise InvalidError(f"Secret.from_dict({values!r}): give a dict of variable names to str values")
        for key, value in values.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise InvalidError(f"Secret.from_dict: {key!r} is not an environment variable name "
                                   "(letters, digits and _, not starting with a digit)")
            if not isinstance(value, str):
                raise InvalidError(f"Secret.from_dict: the value of {key} is of type {type(value).__name__}; "
                                   "environment variables are str")
        return Secret(values=dict(values))

    @staticmethod
    def from_name(name: str) -> Secret:
        """A secret stored on the runtime host (``remotecell secret create NAME KEY=VALUE ...``)."""
        if not isinstance(name, str) or not SECRET_NAME.match(name):
            raise InvalidError(f"Secret.from_name({name!r}): a secret name is 1 to 64 letters, digits, "
                               "'_', '-' or '.', starting with a letter or digit")
        return Secret(name=name)

    @staticmethod
    def from_local_environ(names: Iterable[str]) -> Secret:
        """These variables of this process's environment, as they are now."""
        names = list(names)
        missing = [n for n in names if n not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ: {missing} not set in this process's environment")
        return Secret.from_dict({n: os.environ[n] for n in names})

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name} if self.name is not None else {"values": dict(self.values)}

    def __repr__(self) -> str:  # never the values
        if self.name is not None:
            return f"Secret.from_name({self.name!r})"
        return f"Secret.from_dict(<{', '.join(sorted(self.values))}>)"


def check_secrets(value: Any) -> list[dict[str, Any]]:
    """``secrets=[...]`` of ``@app.function``: a list of ``rc.Secret``; returned as the runtime wants it."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, Secret) for s in value):
        raise InvalidError(f"secrets={value!r} must be a list of rc.Secret "
                           "(rc.Secret.from_dict({...}), rc.Secret.from_name('name'))")
    return [s.to_wire() for s in value]


class Volume:
    """A persistent directory on the runtime host, at a path of the function's choosing in its containers.

    >>> vol = rc.Volume.from_name("models", create_if_missing=True)
    >>> @app.function(volumes={"/srv/models": vol})
    ... def save(name, data):
    ...     open(f"/srv/models/{name}", "wb").write(data)
    >>> vol.listdir("/")                 # or: await vol.listdir.aio("/")
    [{'path': 'a.bin', 'type': 'file', 'size': 3}]
    >>> vol.read_file("a.bin")
    b'abc'

    Every container of the host sees the same files at once (``commit`` and
    ``reload`` are there for Modal code, and do nothing). The path is made a link
    to the volume's folder on the host, so it must not exist there already, and
    one path can hold one volume per host.
    """

    def __init__(self, name: str, create_if_missing: bool = False) -> None:
        if not isinstance(name, str) or not VOLUME_NAME.match(name):
            raise InvalidError(f"Volume.from_name({name!r}): a volume name is 1 to 64 letters, digits, "
                               "'_', '-' or '.', starting with a letter or digit")
        self.name = name
        self.create_if_missing = create_if_missing

    @staticmethod
    def from_name(name: str, create_if_missing: bool = False) -> Volume:
        """The volume ``name``; it must exist on the runtime unless ``create_if_missing`` (checked on first use)."""
        return Volume(name, create_if_missing)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "create": self.create_if_missing}

    @property
    def listdir(self) -> Twin:
        return twin(self._listdir)

    @property
    def read_file(self) -> Twin:
        return twin(self._read_file)

    async def _listdir(self, path: str = "/") -> list[dict[str, Any]]:
        """The entries under ``path`` (relative to the volume's root): path, type (file or dir), size."""
        msg = VolumeLsMsg(name=self.name, create=self.create_if_missing, path=path)
        reply, _ = await _client.connection().ask_aio(msg, VolumeLsReply)
        return reply.entries

    async def _read_file(self, path: str) -> bytes:
        """The bytes of the file at ``path`` in the volume."""
        msg = VolumeReadMsg(name=self.name, create=self.create_if_missing, path=path)
        _, payloads = await _client.connection().ask_aio(msg, VolumeReadReply)
        return b"".join(bytes(framing.buffer_of(f)) for f in payloads[0].frames) if payloads else b""

    def commit(self) -> None:
        """Nothing to do: writes are on the host's disk, seen by every container at once."""

    def reload(self) -> None:
        """Nothing to do: see ``commit``."""

    def __repr__(self) -> str:
        return f"Volume.from_name({self.name!r})"


def check_volumes(value: Any) -> dict[str, dict[str, Any]]:
    """``volumes={"/path": rc.Volume}`` of ``@app.function``: absolute, distinct paths other than ``/``."""
    if not isinstance(value, Mapping) or not all(isinstance(v, Volume) for v in value.values()):
        raise InvalidError(f"volumes={value!r} must be a dict of absolute paths to rc.Volume, "
                           "e.g. {'/srv/models': rc.Volume.from_name('models')}")
    out = {}
    for path, volume in value.items():
        normal = posixpath.normpath(path) if isinstance(path, str) else ""
        if not normal.startswith("/") or normal == "/":
            raise InvalidError(f"volumes: {path!r} is not an absolute path below / (e.g. '/srv/models')")
        out[normal] = volume.to_wire()
    return out
