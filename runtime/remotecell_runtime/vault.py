"""Named secrets on the runtime host: ``STATE/secrets/NAME.json`` (0600, in a 0700 folder).

``remotecell secret create NAME KEY=VALUE ...`` writes one; a function that asks
for ``rc.Secret.from_name(NAME)`` gets its variables in its containers' environment.
Values are never logged, and never sent back to clients.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import auth
from .protocol import dotenv
from .protocol.options import SecretRef

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as rc.Secret.from_name checks it
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretError(Exception):
    """A secret that is malformed, or asked for wrongly: the message says what to do."""


class SecretNotFound(SecretError):
    """No secret of that name on this runtime host."""


def secrets_dir(state_dir: Path) -> Path:
    return state_dir / "secrets"


def _path(state_dir: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise SecretError(f"{name!r} is not a secret name: 1 to 64 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    return secrets_dir(state_dir) / f"{name}.json"


def parse_assignments(pairs: list[str], allow_none: bool = False) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from the command line (none at all only with ``allow_none``: values from files)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise SecretError(f"{pair.split('=')[0]!r}: give KEY=VALUE with KEY an environment variable name")
        values[key] = value
    if not values and not allow_none:
        raise SecretError("give at least one KEY=VALUE (or --from-dotenv PATH, --from-json PATH)")
    return values


def read_files(dotenv_path: Path | None, json_path: Path | None) -> dict[str, str]:
    """``secret create --from-dotenv PATH --from-json PATH``: the variables of those files, the JSON's last."""
    values: dict[str, str] = {}
    try:
        if dotenv_path is not None:
            values.update(dotenv.parse(dotenv_path.read_text(), str(dotenv_path)))
        if json_path is not None:
            loaded = json.loads(json_path.read_text())
            if not isinstance(loaded, dict) or not all(isinstance(v, (str, int, float)) for v in loaded.values()):
                raise SecretError(f"{json_path} must hold a JSON object of names to strings or numbers")
            values.update({str(k): str(v) for k, v in loaded.items()})
    except (OSError, ValueError) as exc:  # a missing file, bad JSON, a bad .env line (DotenvError)
        raise SecretError(str(exc)) from None
    bad = [k for k in values if not _ENV_NAME.match(k)]
    if bad:
        raise SecretError(f"{bad} are not environment variable names (letters, digits and _)")
    return values


def created_at(state_dir: Path, name: str) -> float:
    return _path(state_dir, name).stat().st_mtime


def create(state_dir: Path, name: str, values: dict[str, str], force: bool = False) -> Path:
    path = _path(state_dir, name)
    if path.exists() and not force:
        raise SecretError(f"secret {name!r} exists; add --force to replace it")
    auth.ensure_private_dir(state_dir)
    auth.ensure_private_dir(secrets_dir(state_dir))
    auth.write_private_json(path, values)
    return path


def delete(state_dir: Path, name: str) -> None:
    path = _path(state_dir, name)
    if not path.exists():
        raise SecretNotFound(f"no secret {name!r} in {secrets_dir(state_dir)}")
    path.unlink()


def names(state_dir: Path) -> list[str]:
    folder = secrets_dir(state_dir)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


def load(state_dir: Path, name: str) -> dict[str, str]:
    """The variables of secret ``name``; SecretError saying how to create it when it is missing."""
    path = _path(state_dir, name)
    if not path.exists():
        raise SecretNotFound(f"no secret {name!r} on this runtime; create it on the runtime host with "
                          f"`remotecell secret create {name} KEY=VALUE ...`")
    try:
        auth.check_private(path)
        values = json.loads(path.read_text())
    except (auth.KeySetupError, ValueError) as exc:
        raise SecretError(f"secret {name!r}: {exc}") from None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise SecretError(f"secret file {path} is not a JSON object of str values; create it again")
    return values


def environment(state_dir: Path, secrets: list[SecretRef]) -> dict[str, str]:
    """The variables a function's ``secrets`` option adds, later ones winning."""
    env: dict[str, str] = {}
    for secret in secrets:
        if secret.name is not None and secret.variables is None:
            values = load(state_dir, secret.name)
            missing = [k for k in secret.required_keys if k not in values]
            if missing:
                raise SecretError(f"secret {secret.name!r} lacks the required key(s) {', '.join(missing)} (it has: "
                                  f"{', '.join(sorted(values)) or 'none'}); add them on the runtime host with "
                                  f"`remotecell secret create {secret.name} KEY=VALUE ... --force`")
            env.update(values)
        elif secret.variables is not None and secret.name is None:
            env.update({str(k): str(v) for k, v in secret.variables.items()})
        else:
            raise SecretError("each secret must be {'name': NAME} or {'values': {KEY: VALUE}}")
    return env
