"""Proxy auth tokens of web endpoints: ``remotecell web-token new|list|revoke``, checked by the gateway.

A token is a name, a key (``wk-…``, sent as the ``Modal-Key`` header) and a secret (``ws-…``,
sent as ``Modal-Secret``), as Modal's proxy auth tokens are.  ``STATE/web_tokens.json`` (0600)
keeps each name's key and the sha256 of its secret, never the secret: it is printed once, at
``new``.  The gateway checks a request's pair against the file as it is on disk now (it reads
the file again whenever its mtime or size changed, a ``stat`` per checked request), so a
revocation holds for the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from . import auth

FILE = "web_tokens.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class WebTokenError(Exception):
    """A bad name, a name that exists (or does not), or a file that cannot be read."""


def _path(state_dir: Path) -> Path:
    return state_dir / FILE


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WebTokenError(f"cannot read {path}: {exc}; fix or remove it") from None
    if not isinstance(data, dict):
        raise WebTokenError(f"{path} is not a JSON object; fix or remove it")
    return data


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new(state_dir: Path, name: str) -> dict[str, str]:
    """Make token ``name``: its key and secret (the secret is shown only now)."""
    if not _NAME.match(name or ""):
        raise WebTokenError(f"token name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    auth.ensure_private_dir(state_dir)
    path = _path(state_dir)
    tokens = _load(path)
    if name in tokens:
        raise WebTokenError(f"a web token named {name!r} exists; revoke it first (remotecell web-token revoke "
                            f"{name}) or choose another name")
    key, secret = f"wk-{secrets.token_urlsafe(12)}", f"ws-{secrets.token_urlsafe(24)}"
    tokens[name] = {"key": key, "secret_sha256": _digest(secret), "created": time.time()}
    auth.write_private_json(path, tokens)
    return {"name": name, "key": key, "secret": secret}


def names(state_dir: Path) -> list[dict[str, Any]]:
    """Every token: name, key and when it was made (never a secret)."""
    tokens = _load(_path(state_dir))
    return [{"name": n, "key": t.get("key", ""), "created": t.get("created", 0)} for n, t in sorted(tokens.items())]


def revoke(state_dir: Path, name: str) -> None:
    path = _path(state_dir)
    tokens = _load(path)
    if name not in tokens:
        raise WebTokenError(f"no web token named {name!r} (remotecell web-token list shows them)")
    del tokens[name]
    auth.write_private_json(path, tokens)


class TokenCheck:
    """The gateway's check of a ``Modal-Key``/``Modal-Secret`` pair against the file as it is now."""

    def __init__(self, state_dir: Path) -> None:
        self.path = _path(state_dir)
        self._seen: tuple[int, int, int] | None = None
        self._digests: dict[str, str] = {}  # key -> sha256 of its secret

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        try:
            tokens = _load(self.path) if seen is not None else {}
        except WebTokenError:
            tokens = {}  # an unreadable file admits nobody
        self._digests = {str(t.get("key")): str(t.get("secret_sha256")) for t in tokens.values()
                         if isinstance(t, dict)}
        self._seen = seen

    def admits(self, key: str | None, secret: str | None) -> bool:
        if not key or not secret:
            return False
        self._refresh()
        digest = self._digests.get(key)
        return digest is not None and hmac.compare_digest(digest, _digest(secret))
