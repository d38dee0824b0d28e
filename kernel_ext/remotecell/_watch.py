"""Whether the runtime is there: heartbeats, restarts seen, and the crashed local runtime started again.

A connection pings its runtime every ``HEARTBEAT_INTERVAL_S`` on a socket of its own;
a pong from another runtime process than before means the runtime restarted, and the
apps of this process register there again (``Connection.on_restart``).  Requests that
were waiting are lost with the old process: their waiters raise ``RuntimeRestarted``
(``check_restart``), or ``ConnectionError`` once the runtime has been silent for
``RUNTIME_GONE_S`` (``check_alive``).

The embedded local runtime (``_local``: started by a client on first use) that crashed
is started again here, by whichever thread sees it first (the heartbeat, a request
that found no runtime, a wait whose stream connection closed): ``revive`` does it once,
under a lock, and restores the apps once.  A runtime this client did not start is never
started from here; its errors say where it was and how to start it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import zmq
from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.errors import ErrorName
from remotecell_runtime.protocol.messages.session import ErrorReply, HelloMsg, HelloReply, PingMsg, PongMsg
from remotecell_runtime.protocol.versions import versions

from . import _local, exceptions

HELLO_TIMEOUT_S = float(os.environ.get("REMOTECELL_HELLO_TIMEOUT_S", "10"))
HEARTBEAT_INTERVAL_S = 2.0
RUNTIME_GONE_S = float(os.environ.get("REMOTECELL_RUNTIME_GONE_S", "15"))
EXIT_WAIT_S = 2.0  # how long a runtime that closed its sockets may take to be gone before it counts as alive


class Watched(Protocol):
    """What the watch needs of its connection (``_client.Connection``)."""

    info: _local.ConnectionInfo
    sid: str
    runtime_id: str

    @property
    def on_restart(self) -> Iterable[Any]: ...  # apps: ``restart_after_runtime_restart(conn)``

    def new_socket(self) -> zmq.Socket: ...

    def request(self, header: dict[str, Any], payloads: Any = ..., timeout_s: float | None = ...
                ) -> dict[str, Any]: ...


class RuntimeWatch:
    """The heartbeat of one connection and what follows from it."""

    def __init__(self, conn: Watched) -> None:
        self.conn = conn
        self.last_pong = time.monotonic()
        self.refused: str | None = None  # why the runtime refuses this client now (its token was revoked)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()  # one restart of a crashed local runtime, its apps restored once

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="remotecell-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread not in (None, threading.current_thread()):
            self._thread.join(timeout=2)

    def _beat(self) -> None:
        conn = self.conn
        sock = conn.new_socket()
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                sock.send_multipart(framing.encode(dict(PingMsg().to_wire(), id="hb", sid=conn.sid)))
                while sock.poll(0):
                    pong = framing.decode_header(sock.recv_multipart())
                    if pong.get("t") == "error" and ErrorReply.from_wire(pong).error.type == ErrorName.AUTH:
                        self.refused = ErrorReply.from_wire(pong).error.message
                        continue
                    self.last_pong = time.monotonic()
                    runtime_id = PongMsg.from_wire(pong).runtime_id if pong.get("t") == "pong" else None
                    if runtime_id not in (None, conn.runtime_id):
                        self.restarted(runtime_id)
                if conn.info.embedded and _local.crashed(conn.info):
                    self._revive_quietly()
            except zmq.ZMQError:  # the context was destroyed under us: we are closing
                return

    def _revive_quietly(self) -> None:
        try:
            self.revive(self.conn.runtime_id)
        except Exception as exc:  # the next call says it again, to its caller
            print(f"remotecell: could not restart the local runtime: {exc}", file=sys.stderr)

    def revive(self, dead_runtime_id: str) -> bool:
        """After a crash of the embedded local runtime ``dead_runtime_id``: start it again, and the apps
        register there again. True when a runtime other than that one serves now (started here or elsewhere);
        False when it is not this client's to start, or it did not crash."""
        conn = self.conn
        with self._lock:
            if conn.runtime_id != dead_runtime_id:
                return True  # another thread did it meanwhile
            if not _local.crashed(conn.info):
                return False
            print(f"remotecell: the local runtime (pid {conn.info.pid}) died; starting it again "
                  f"(its log: {_local.home() / 'runtime.log'})", file=sys.stderr)
            conn.info = _local.start_local()
            reply = HelloReply.from_wire(conn.request(HelloMsg(versions=versions()).to_wire(),
                                                      timeout_s=HELLO_TIMEOUT_S))
            self.restarted(reply.runtime_id)
            return True

    def lost_runtime(self, runtime_id: str) -> bool:
        """The runtime closed a stream connection: when it crashed, start it again (``revive``); True then.

        Its process may still be going when its sockets close: give it a moment to be gone.
        """
        info = self.conn.info
        if not info.embedded:
            return False
        deadline = time.monotonic() + EXIT_WAIT_S
        while _local._alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.revive(runtime_id)

    def restarted(self, runtime_id: str) -> None:
        """The runtime restarted (same address, new process): apps start again and re-register (once, whoever
        sees it first: the heartbeat, or a caller that restarted it)."""
        conn = self.conn
        with self._lock:
            if runtime_id == conn.runtime_id:
                return
            conn.runtime_id = runtime_id
            for app in list(conn.on_restart):
                try:
                    app.restart_after_runtime_restart(conn)
                except Exception as exc:
                    print(f"remotecell: could not restore app {app.name!r} on the restarted runtime: {exc}",
                          file=sys.stderr)

    def check_restart(self, runtime_id: str) -> None:
        """Raise if the runtime restarted since ``runtime_id``: requests sent to the old one are lost."""
        if runtime_id != self.conn.runtime_id:
            raise exceptions.RuntimeRestarted(
                f"the runtime at {self.conn.info.address} restarted while this request waited for it; "
                "the request was lost with the old runtime process"
            )

    def check_alive(self) -> None:
        """Raise if the runtime has not answered a heartbeat for ``RUNTIME_GONE_S``, or refuses this client."""
        if self.refused is not None:  # requests waiting when the token was revoked: their answers never come
            raise exceptions.AuthError(f"the runtime at {self.conn.info.address} refuses this client: {self.refused}")
        silent_s = time.monotonic() - self.last_pong
        if silent_s > RUNTIME_GONE_S:
            raise exceptions.ConnectionError(
                f"the runtime at {self.conn.info.address} has not answered for {silent_s:.0f} s: it stopped or "
                f"crashed. {self._how_to_start()}"
            )

    def _how_to_start(self) -> str:
        info = self.conn.info
        if info.embedded:
            return f"Its log says why ({_local.home() / 'runtime.log'}); the next call starts a runtime again"
        if os.environ.get("REMOTECELL_RUNTIME"):
            return (f"It is the runtime REMOTECELL_RUNTIME names ({info.source}), which this client does not "
                    "start: start it again where it runs (`remotecell serve`, with its --state-dir and --bind), "
                    "or unset REMOTECELL_RUNTIME to use a local runtime")
        return (f"It was started by hand, so this client does not start it: start it again (`remotecell serve "
                f"--state-dir {_local.home()}`), or stop it for good (`remotecell stop`) and the next call starts "
                "one of its own")
