"""Keys and the allowlist of clients for tcp:// listeners.

Layout under the state directory (every file 0600, every directory 0700)::

    keys/server.key            the server's public key (clients need it)
    keys/server.key_secret     the server's key pair
    keys/authorized/NAME.key   one public key per client token

A tcp:// listener is CURVE-encrypted and ZAP checks each client's key against
``keys/authorized`` before any message reaches the daemon, so nothing from an
unknown peer is ever parsed, let alone unpickled.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeySetupError(Exception):
    """Keys are missing or unsafe; the message says how to fix it."""


@dataclass
class ServerKeys:
    public: bytes
    secret: bytes


def keys_dir(state_dir: Path) -> Path:
    return state_dir / "keys"


def authorized_dir(state_dir: Path) -> Path:
    return keys_dir(state_dir) / "authorized"


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def check_private(path: Path) -> None:
    """Refuse key material that others can read or change."""
    mode = stat.S_IMODE(path.stat().st_mode)
    loose = mode & (0o077 if path.is_file() else 0o022)
    if loose:
        want = "600" if path.is_file() else "700"
        raise KeySetupError(
            f"{path} has permissions {mode:o}, which let other users read or change it; "
            f"fix it with: chmod {want} {path}"
        )


def server_keys(state_dir: Path, create: bool = True) -> ServerKeys:
    kdir = keys_dir(state_dir)
    secret_file = kdir / "server.key_secret"
    if not secret_file.exists():
        if not create:
            raise KeySetupError(f"no server key at {secret_file}; start the runtime once to create it")
        ensure_private_dir(kdir)
        public_file, secret_file_s = zmq.auth.create_certificates(str(kdir), "server")
        os.chmod(public_file, 0o600)
        os.chmod(secret_file_s, 0o600)
    check_private(kdir)
    check_private(secret_file)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    assert secret is not None
    return ServerKeys(public, secret)


def authorized_keys(state_dir: Path) -> list[Path]:
    adir = authorized_dir(state_dir)
    if not adir.exists():
        return []
    check_private(adir)
    files = sorted(adir.glob("*.key"))
    for f in files:
        check_private(f)
    return files


def new_token(state_dir: Path, name: str, address: str | None) -> dict[str, str]:
    """Create a client key pair, allow its public key, return the client's connection info."""
    if not TOKEN_NAME.match(name):
        raise KeySetupError(f"token name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    adir = authorized_dir(state_dir)
    ensure_private_dir(keys_dir(state_dir))
    ensure_private_dir(adir)
    if (adir / f"{name}.key").exists():
        raise KeySetupError(f"a token named {name!r} exists; revoke it first or pick another name")
    server = server_keys(state_dir)
    client_public, client_secret = zmq.curve_keypair()
    public_file = adir / f"{name}.key"
    # zmq.auth reads certificates in its own ZPL format
    public_file.write_text(
        "metadata\ncurve\n    public-key = \"" + client_public.decode() + "\"\n"
    )
    os.chmod(public_file, 0o600)
    return {
        "address": address or "",
        "server_key": server.public.decode(),
        "client_public": client_public.decode(),
        "client_secret": client_secret.decode(),
        "token": name,
    }


def revoke_token(state_dir: Path, name: str) -> None:
    path = authorized_dir(state_dir) / f"{name}.key"
    if not TOKEN_NAME.match(name) or not path.exists():
        raise KeySetupError(f"no token named {name!r}; `remotecell token list` shows them")
    path.unlink()


def list_tokens(state_dir: Path) -> list[str]:
    return [p.stem for p in authorized_keys(state_dir)]


def apply_curve_server(sock: zmq.Socket, keys: ServerKeys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def write_private_json(path: Path, data: dict) -> None:
    """Write JSON readable by its owner only, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def start_zap(ctx: zmq.Context) -> Any:
    """The ZAP handler of ``ctx`` (one a context): every CURVE connection to it is asked about, by domain."""
    from zmq.auth.asyncio import AsyncioAuthenticator  # only a runtime that listens on tcp:// needs it

    authenticator = AsyncioAuthenticator(ctx)
    authenticator.start()
    return authenticator


class ZapGate:
    """ZAP for the tcp:// client listeners: CURVE clients whose key is in ``keys/authorized``, read again as it
    changes (the default domain; containers on other hosts have a domain of their own, ``ContainerGate``)."""

    def __init__(self, authenticator: Any, state_dir: Path) -> None:
        if not authorized_keys(state_dir):
            raise KeySetupError(
                "refusing to listen on tcp:// without client keys: create one with "
                f"`remotecell token new NAME --state-dir {state_dir}` and give the client its file"
            )
        self.dir = authorized_dir(state_dir)
        self.keys: set[str] = set()  # the allowed clients' public keys (Z85): what a message's User-Id is
        self._load()
        authenticator.configure_curve_callback("*", self)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP asks: may the client with this public key (Z85) connect?"""
        return key.decode() in self.keys

    def _load(self) -> set[str]:
        """Read the allowlist; the keys it no longer holds."""
        from zmq.auth import load_certificates

        self.mtime_ns = self.dir.stat().st_mtime_ns if self.dir.exists() else 0
        keys = {key.decode() for key in load_certificates(str(self.dir))} if self.dir.exists() else set()
        gone, self.keys = self.keys - keys, keys
        return gone

    def reload_if_changed(self) -> set[str]:
        """A token made or revoked since: the allowlist is read again (no restart); the keys revoked."""
        if self.dir.exists() and self.dir.stat().st_mtime_ns != self.mtime_ns:
            return self._load()
        return set()

    def allows(self, user_id: str) -> bool:
        """Whether a message whose ZAP User-Id is ``user_id`` comes from a key still allowed (one revoked since
        its connection was made is not: ZeroMQ does not authenticate a connection again)."""
        return user_id in self.keys


CONTAINER_DOMAIN = "containers"  # the ZAP domain of the daemon's tcp:// container socket


class ContainerGate:
    """ZAP for the tcp:// container socket: a container's key is admitted for its one container id while it
    lives (``admit``/``forget``); a message is taken only from the key of the id it says it is (``owner``).

    Example::

        gate = ContainerGate(authenticator)
        gate.admit("c7-4242", public_key)   # the key its own host made; the daemon learnt it from its backend
        gate.owner(public_key) == "c7-4242"
    """

    def __init__(self, authenticator: Any) -> None:
        self.cids: dict[str, str] = {}  # public key (Z85) -> the container id it was admitted for
        authenticator.configure_curve_callback(CONTAINER_DOMAIN, self)

    def callback(self, domain: str, key: bytes) -> bool:
        return key.decode() in self.cids

    def admit(self, cid: str, public_key: str) -> None:
        self.cids[public_key] = cid

    def forget(self, cid: str) -> None:
        for key in [k for k, c in self.cids.items() if c == cid]:
            del self.cids[key]

    def owner(self, user_id: str | None) -> str | None:
        """The container id a connection's key (its ZAP User-Id) was admitted for."""
        return self.cids.get(user_id) if user_id else None
