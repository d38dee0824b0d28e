"""remotecell: an app with two functions on the local runtime (started on the first call).

The runtime lives in $REMOTECELL_HOME (the harness gives every process a fresh
one), as a daemon of its own session with one container process per function.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import remotecell as rc
from common import alive, descendants
from remotecell import _client

PACKAGES = ["remotecell", "pyzmq", "cloudpickle", "numpy"]


class Session:
    def __init__(self, code: Any) -> None:
        self.app = rc.App("bench")
        self.inc = self.app.function()(code.inc)
        self.ident = self.app.function()(code.identity)

    def start(self) -> None:
        assert self.inc.remote(1) == 2

    def callers(self) -> dict[str, Callable[[int], Any]]:
        return {"main": self.inc.remote}

    def identity(self, value: Any) -> Any:
        return self.ident.remote(value)

    def tidy(self) -> None:
        pass

    def daemon_pid(self) -> int:
        home = Path(os.environ["REMOTECELL_HOME"])
        return int(json.loads((home / "connection.json").read_text())["pid"])

    def pids(self) -> list[int]:
        pid = self.daemon_pid()
        return [pid, *descendants(pid)]

    def stop(self) -> None:
        pid = self.daemon_pid()
        self.app.stop()
        _client.connection().request({"t": "shutdown"})
        _client.reset_connection()
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
