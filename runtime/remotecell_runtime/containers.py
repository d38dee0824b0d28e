"""Container processes: start, watch, stop, and say why one died."""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("remotecell.runtime")

LOG_TAIL_LINES = 40
INTERRUPT_GRACE_S = 1.0
_ids = itertools.count(1)


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


@dataclass
class Lease:
    """The container lent to one blocking caller: its calls go straight to the container's own socket."""

    peer: Any  # the caller's (listener, identity), where lease news goes
    sid: str
    token: str  # direct calls carry it: the container takes calls from this leaseholder only
    fid: str  # the fid its holder calls: the pool's, or one its app's redeploy superseded
    revoking: bool = False  # asked back; the container answers ``released`` when it is free


@dataclass
class Container:
    id: str
    fid: str
    max_inputs: int
    gpus: list[int]
    cpus: float = 0.0  # reserved from the host's CPU budget while it lives
    proc: asyncio.subprocess.Process | None = None
    state: State = State.STARTING
    active: set[str] = field(default_factory=set)  # input ids running here
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    started_at: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None  # set when the runtime itself stops it (timeout, memory, ...)
    cancel_w: int | None = None  # the cancel pipe: ids of inputs to interrupt, read by its SIGINT handler
    direct: str | None = None  # its own socket, for a leaseholder's calls (None: it takes no lease)
    lease: Lease | None = None

    @property
    def free_slots(self) -> int:
        if self.state not in (State.IDLE, State.BUSY):
            return 0
        return self.max_inputs - len(self.active)

    def death_cause(self, returncode: int | None) -> str:
        """A sentence saying why this container ended, with its last lines of output."""
        if self.stop_reason:
            cause = self.stop_reason
        elif returncode is None:
            cause = "it vanished"
        elif returncode < 0:
            cause = f"it was killed by signal {signal.Signals(-returncode).name}"
        else:
            cause = f"it exited with code {returncode}"
        lines = "\n".join(list(self.tail)[-10:])
        return f"container {self.id} died under the call: {cause}" + (
            f"\nlast output lines:\n{lines}" if lines else ""
        )


class ContainerManager:
    """Starts container processes and reports their exits to ``on_exit``."""

    def __init__(self, address: str, shm_prefix: str, on_exit: Callable[[Container, int | None], None],
                 sock_dir: str, client_env: dict[str, str]) -> None:
        self.address = address
        self.client_env = client_env  # user code in a container talks to this runtime as a client
        self.sock_dir = sock_dir  # private (0700): where containers bind their own sockets
        self.shm_prefix = shm_prefix
        self.on_exit = on_exit
        self.containers: dict[str, Container] = {}

    def start(self, fid: str, max_inputs: int, gpus: list[int], env: dict[str, str]) -> Container:
        """A container in state STARTING; its process comes up in the background."""
        cid = f"c{next(_ids)}-{os.getpid()}"
        container = Container(cid, fid, max_inputs, gpus)
        self.containers[cid] = container
        asyncio.ensure_future(self._spawn(container, env))
        return container

    async def _spawn(self, container: Container, env: dict[str, str]) -> None:
        child_env = {**os.environ, **env, **self.client_env}
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode makes cold starts faster
        child_env["REMOTECELL_SHM_PREFIX"] = self.shm_prefix
        child_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in container.gpus)
        child_env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # number devices as nvidia-smi does
        cancel_r, cancel_w = os.pipe()
        os.set_blocking(cancel_w, False)
        try:
            container.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "remotecell_runtime.container",
                "--connect", self.address, "--id", container.id, "--cancel-fd", str(cancel_r),
                "--direct", f"ipc://{self._direct_path(container)}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env,
                pass_fds=(cancel_r,),
                start_new_session=True,  # a ^C in the daemon's terminal is not theirs
            )
        except OSError as exc:
            os.close(cancel_w)
            container.stop_reason = f"it could not be started: {exc}"
            self._exited(container, None)
            return
        finally:
            os.close(cancel_r)
        container.cancel_w = cancel_w
        if container.state is State.STOPPING:  # stopped while its process was starting
            self.signal(container, signal.SIGKILL)
        await self._watch(container)

    async def _watch(self, container: Container) -> None:
        assert container.proc is not None and container.proc.stdout is not None
        async for raw in container.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            container.tail.append(line)
            log.debug("[%s] %s", container.id, line)
        self._exited(container, await container.proc.wait())

    def _direct_path(self, container: Container) -> str:
        return os.path.join(self.sock_dir, f"{container.id}.sock")

    def _exited(self, container: Container, returncode: int | None) -> None:
        container.state = State.DEAD
        if container.cancel_w is not None:
            os.close(container.cancel_w)
            container.cancel_w = None
        try:  # a killed container leaves its socket file behind
            os.unlink(self._direct_path(container))
        except FileNotFoundError:
            pass
        self.containers.pop(container.id, None)
        self.on_exit(container, returncode)

    def signal(self, container: Container, sig: int) -> None:
        if container.proc is not None and container.proc.returncode is None:
            try:
                container.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def cancel(self, container: Container, input_id: str) -> None:
        """Interrupt ``input_id`` if it is the one running; the container skips it if it is still queued."""
        if container.cancel_w is None:
            return
        try:
            os.write(container.cancel_w, input_id.encode() + b"\n")
        except OSError:  # gone, or the pipe is full of names it never read
            return
        self.signal(container, signal.SIGINT)

    def stop(self, container: Container, reason: str | None, grace_s: float, interrupt: bool = False,
             signal_now: bool = True) -> None:
        """SIGTERM now (after SIGINT and ``INTERRUPT_GRACE_S`` with ``interrupt``), SIGKILL ``grace_s`` later.

        ``signal_now=False``: the container was asked to stop by message; only SIGKILL follows.
        """
        if container.state is State.DEAD:
            return
        container.state = State.STOPPING
        container.stop_reason = container.stop_reason or reason
        loop = asyncio.get_running_loop()
        if interrupt:  # let the running code unwind first
            self.signal(container, signal.SIGINT)
            loop.call_later(INTERRUPT_GRACE_S, self.signal, container, signal.SIGTERM)
            grace_s += INTERRUPT_GRACE_S
        elif signal_now:
            self.signal(container, signal.SIGTERM)
        loop.call_later(grace_s, self.signal, container, signal.SIGKILL)

    def rss_mib(self, container: Container) -> float | None:
        """Resident memory of the container's process, from /proc (Linux)."""
        if container.proc is None:
            return None
        try:
            with open(f"/proc/{container.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def all(self) -> list[Container]:
        return list(self.containers.values())

    def stats(self) -> dict[str, Any]:
        counts = collections.Counter(c.state.value for c in self.containers.values())
        return dict(counts)
