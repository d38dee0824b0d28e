"""Infrastructure declared in code: secrets (environment variables) and the ``volumes=`` option (``volumes`` has
the volumes themselves, ``images`` the images)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotecell_runtime.protocol import dotenv

from .exceptions import InvalidError
from .volumes import Volume

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
    required_keys: tuple[str, ...] = ()

    @staticmethod
    def from_dict(values: Mapping[str, str | None]) -> Secret:
        """Variables given here; they travel to the runtime with the function's options (a None value is left
        out, as Modal does)."""
        if not isinstance(values, Mapping):
            raise InvalidError(f"Secret.from_dict({values!r}): give a dict of variable names to str values")
        for key, value in values.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise InvalidError(f"Secret.from_dict: {key!r} is not an environment variable name "
                                   "(letters, digits and _, not starting with a digit)")
            if value is not None and not isinstance(value, str):
                raise InvalidError(f"Secret.from_dict: the value of {key} is of type {type(value).__name__}; "
                                   "environment variables are str")
        return Secret(values={k: v for k, v in values.items() if v is not None})

    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None,
                  required_keys: Iterable[str] = ()) -> Secret:
        """A secret stored on the runtime host (``remotecell secret create NAME KEY=VALUE ...``).

        ``required_keys``: the function's registration fails, naming the missing ones, unless the
        secret has all of them. ``environment_name`` is Modal's; one runtime has one environment.
        """
        if not isinstance(name, str) or not SECRET_NAME.match(name):
            raise InvalidError(f"Secret.from_name({name!r}): a secret name is 1 to 64 letters, digits, "
                               "'_', '-' or '.', starting with a letter or digit")
        if isinstance(required_keys, str):
            raise InvalidError(f"Secret.from_name({name!r}, required_keys={required_keys!r}): give a list of "
                               "variable names, e.g. ['OPENAI_API_KEY']")
        keys = tuple(required_keys)
        bad = [k for k in keys if not isinstance(k, str) or not _ENV_NAME.match(k)]
        if bad:
            raise InvalidError(f"Secret.from_name({name!r}): required_keys {bad} are not environment variable "
                               "names (letters, digits and _, not starting with a digit)")
        if environment_name is not None and not isinstance(environment_name, str):
            raise InvalidError(f"Secret.from_name: environment_name={environment_name!r} must be a string")
        return Secret(name=name, required_keys=keys)

    @staticmethod
    def from_dotenv(path: str | os.PathLike[str] | None = None, *, filename: str = ".env") -> Secret:
        """The variables of a ``.env`` file, read here: ``filename`` in ``path`` (a folder, or a file's folder,
        such as ``__file__``) or the nearest folder above it; without ``path``, from the current folder.

        As Modal's: no such file gives no variables. A line that is not ``KEY=VALUE`` is an ``InvalidError``
        naming the file and line (format: ``remotecell_runtime.protocol.dotenv``).
        """
        try:
            found = dotenv.find(path, filename)
            values = dotenv.parse(found.read_text(), str(found)) if found is not None else {}
        except (OSError, dotenv.DotenvError) as exc:
            raise InvalidError(f"Secret.from_dotenv: {exc}") from None
        return Secret.from_dict(values)

    @staticmethod
    def from_local_environ(names: Iterable[str]) -> Secret:
        """These variables of this process's environment, as they are now."""
        names = list(names)
        missing = [n for n in names if n not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ: {missing} not set in this process's environment")
        return Secret.from_dict({n: os.environ[n] for n in names})

    def to_wire(self) -> dict[str, Any]:
        if self.name is None:
            return {"values": dict(self.values)}
        return {"name": self.name, **({"required_keys": list(self.required_keys)} if self.required_keys else {})}

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


@dataclass(frozen=True)
class Proxy:
    """Modal's ``modal.Proxy.from_name(name)``, for ``@app.function(proxy=...)``: accepted, with no effect here.

    On Modal a proxy gives a function's outbound traffic a static IP address; a runtime's
    containers reach the network as their host does (or not at all, ``block_network=True``),
    so there is nothing to route. The name is checked and kept in the function's options.
    """

    name: str

    @staticmethod
    def from_name(name: str) -> Proxy:
        if not isinstance(name, str) or not SECRET_NAME.match(name):
            raise InvalidError(f"Proxy.from_name({name!r}): a proxy name is 1 to 64 letters, digits, '_', '-' or "
                               "'.', starting with a letter or digit")
        return Proxy(name)
