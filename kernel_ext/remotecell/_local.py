"""Finding the runtime to talk to, and starting the local one when there is none.

Order: ``REMOTECELL_RUNTIME`` (a connection file, or an ipc:// address), else
the local runtime whose connection file is ``$REMOTECELL_HOME/connection.json``
(default ``~/.remotecell``), started in the background on first use (``serve
--on-demand``).  One started so is *embedded*: a client starts it again when it
crashed (``crashed``: it died and left its connection file; one that was stopped
removed it).  A runtime started by hand (``remotecell serve``), or one that
``REMOTECELL_RUNTIME`` names, is never started again from here.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .exceptions import AuthError, ConnectionError

START_TIMEOUT_S = 30.0


@dataclass
class ConnectionInfo:
    address: str
    server_key: str | None = None  # CURVE, for tcp://
    client_public: str | None = None
    client_secret: str | None = None
    pid: int | None = None
    source: str = ""
    embedded: bool = False  # REMOTECELL_HOME's runtime, started by a client: after a crash, started again

    @property
    def is_local(self) -> bool:
        return self.address.startswith("ipc://")


def home() -> Path:
    return Path(os.environ.get("REMOTECELL_HOME") or Path.home() / ".remotecell").expanduser()


def connection_file() -> Path:
    return home() / "connection.json"


def resolve() -> ConnectionInfo:
    """The runtime this process should use, starting the local one if needed."""
    configured = os.environ.get("REMOTECELL_RUNTIME")
    if configured:
        if "://" in configured:
            return ConnectionInfo(configured, source="REMOTECELL_RUNTIME")
        named = read_connection_file(Path(configured))
        named.embedded = False  # named by the user: never started from here
        return named
    info = local_info()
    return info if info is not None else start_local()


def read_connection_file(path: Path) -> ConnectionInfo:
    if not path.exists():
        raise ConnectionError(f"connection file {path} does not exist; check REMOTECELL_RUNTIME")
    mode = path.stat().st_mode & 0o077
    data = json.loads(path.read_text())
    if data.get("client_secret") and mode:
        raise AuthError(f"{path} holds a secret key but others can read it; fix it with: chmod 600 {path}")
    address = data.get("address") or _pick_endpoint(data.get("endpoints", []))
    if not address:
        raise ConnectionError(f"connection file {path} names no address")
    return ConnectionInfo(
        address, data.get("server_key"), data.get("client_public"), data.get("client_secret"),
        data.get("pid"), source=str(path), embedded=bool(data.get("on_demand")),
    )


def _pick_endpoint(endpoints: list[str]) -> str | None:
    local = [e for e in endpoints if e.startswith("ipc://")]
    return (local or endpoints)[0] if endpoints else None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:  # a runtime this process started is its child: reap it, or it lingers as a zombie
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_info() -> ConnectionInfo | None:
    """The running local runtime, or None."""
    path = connection_file()
    if not path.exists():
        return None
    try:
        info = read_connection_file(path)
    except (ValueError, OSError):
        return None
    if not _alive(info.pid):
        return None
    if info.is_local and not Path(info.address.removeprefix("ipc://")).exists():
        return None
    return info


def crashed(info: ConnectionInfo) -> bool:
    """Whether the embedded runtime ``info`` died without stopping: its process is gone, its connection
    file still names it."""
    if not info.embedded or _alive(info.pid):
        return False
    try:
        return bool(json.loads(connection_file().read_text()).get("pid") == info.pid)
    except (OSError, ValueError):
        return False


def start_local() -> ConnectionInfo:
    """Start the local runtime in the background (once, even if many processes race)."""
    root = home()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(root / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = local_info()
        if info is not None:
            return info
        log_path = root / "runtime.log"
        fd = os.open(log_path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(root), "--on-demand"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = local_info()
            if info is not None and (info.pid == proc.pid or proc.poll() is not None):
                return info  # ours, or another's that won a race ours lost (the state folder's lock)
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ConnectionError(f"the local runtime exited at start (code {proc.returncode}):\n{tail}")
            time.sleep(0.01)
        raise ConnectionError(f"the local runtime did not come up within {START_TIMEOUT_S:g} s; see {log_path}")
