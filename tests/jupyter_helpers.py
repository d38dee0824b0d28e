"""A real Jupyter server process for tests, and HTTP requests to it with or without its token."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import stop_process, wait_for

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterServer:
    """``python -m jupyter_server`` (or ``jupyterlab``) on a free port with a known token.

    Its config and data dirs are private to the test; the sys.prefix config still applies, which is
    where installing remotecell enables its server extension. It finds the runtime of
    ``remotecell_home``; the test's ``REMOTECELL_RUNTIME`` only with ``keep_runtime_env``.
    """

    def __init__(self, workdir: Path, remotecell_home: Path, app: str = "jupyter_server",
                 options: tuple[str, ...] = (), keep_runtime_env: bool = False) -> None:
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, REMOTECELL_HOME=str(remotecell_home), JUPYTER_CONFIG_DIR=str(workdir / "config"),
                   JUPYTER_DATA_DIR=str(workdir / "data"), JUPYTER_RUNTIME_DIR=str(workdir / "runtime"))
        if not keep_runtime_env:
            env.pop("REMOTECELL_RUNTIME", None)
        self.log_path = workdir / f"{app}.log"
        self.log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", app, "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={workdir}", *options]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._up, timeout_s=START_TIMEOUT_S, what=f"{app} to start (log: {self.log_path})")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited: {self.log_path.read_text(errors='replace')}")
        try:
            return self.request("GET", "api/status")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, token: bool = True, timeout_s: float = 30) -> tuple[int, Any]:
        """``(HTTP status, JSON body)`` of one request to ``/{path}``."""
        headers = {"Authorization": f"token {self.token}"} if token else {}
        req = urllib.request.Request(f"{self.url}/{path}", method=method, headers=headers,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, body.decode(errors="replace")

    def api(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.request(method, f"remotecell/api/{path}", **kwargs)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
