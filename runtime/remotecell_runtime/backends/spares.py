"""Warm spare containers: interpreters that have imported the container's code and wait to be told who they are.

Most of a container's cold start is its interpreter coming up and importing
ZeroMQ, cloudpickle and the container's own modules (~60-100 ms), none of which
depends on the function it will serve.  So a local runtime keeps
``REMOTECELL_SPARE_CONTAINERS`` (default 1) spares started ahead: processes of
the default image (the runtime's own Python) in the default sandbox, their
imports done, blocked on their launch pipe, not yet connected to anything.
``LocalBackend.start`` gives a spec whose launch shape is the default one (no
image of its own, no GPUs, no volumes in a sandbox, no network block, disk or
cgroup limits, the same interpreter-start variables) a spare instead of a new
process: it writes the spare's launch line (its container id, where to connect,
its own socket and the variables that differ), the spare becomes that container
and says ``hello`` as any other, and a new spare is started.  The first spare is
started before the daemon imports its services (``__main__.serve``), so a
runtime started on demand has it ready by the time the first call arrives.

Invariants: a spare runs no user code and holds nothing of a function until it
is given one; variables read when an interpreter starts (``STARTUP_PREFIXES``)
are never changed by a launch line (a spec that needs others gets a new
process); a spare that dies before it is used is dropped and logged, never
reported as a container's exit; every spare left is killed with the backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import PLAIN, SANDBOX_ENV, Bubblewrap, SandboxUnavailable, container_pid

log = logging.getLogger("remotecell.runtime")

SPARES_ENV = "REMOTECELL_SPARE_CONTAINERS"
DEFAULT_SPARES, MAX_SPARES = 1, 8
STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")  # read as an interpreter starts, not after
LAUNCH_MAX_BYTES = 60_000  # a launch line fits the pipe's buffer: writing it never blocks the loop
VOLUMES_ENV = "REMOTECELL_VOLUMES"  # {mount path: host folder}: links the container makes, or the sandbox's mounts


def spare_count() -> int:
    """How many spares to keep (``REMOTECELL_SPARE_CONTAINERS``); a bad value is logged and the default used."""
    raw = os.environ.get(SPARES_ENV, "").strip()
    if not raw:
        return DEFAULT_SPARES
    if raw.isdigit() and int(raw) <= MAX_SPARES:
        return int(raw)
    log.warning("%s=%r is not a whole number from 0 to %d; keeping %d spare container(s)", SPARES_ENV, raw,
                MAX_SPARES, DEFAULT_SPARES)
    return DEFAULT_SPARES


def base_environment() -> dict[str, str]:
    """What every container of the default image starts with: this runtime's variables, the runtime's Python
    first on ``PATH`` (a ``python`` its code runs is the runtime's own, as an image's is its venv's)."""
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode makes cold starts faster
    return env


def startup_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` an interpreter reads as it starts (a spare has read its own already)."""
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES)}


def find_sandbox(sock_dir: str, state_dir: Path, shares: Sequence[str]) -> tuple[Bubblewrap | None, str]:
    """The container sandbox (on wherever bubblewrap works, unless ``REMOTECELL_SANDBOX=0``) and, when it is
    off, what the status says of it: ``off: `` with why and how to turn it on (also in the log)."""
    if os.environ.get(SANDBOX_ENV) == "0":
        why = f"{SANDBOX_ENV}=0: {PLAIN}; unset it to sandbox them"
        log.warning("sandbox off: %s", why)
        return None, f"off: {why}"
    try:
        sandbox = Bubblewrap.find(sock_dir, hidden=str(state_dir), shares=shares)
    except SandboxUnavailable as exc:
        why = f"{exc}: {PLAIN}"
        log.warning("sandbox off: %s", why)
        return None, f"off: {why}"
    log.info("containers run in sandboxes (%s)", sandbox.bwrap)
    return sandbox, ""  # its version is asked of bwrap when a status shows it: not a round trip at every start


@dataclass
class Spare:
    """One started spare: its process, its container pid (inside its sandbox, not bwrap's) and its pipes."""

    proc: asyncio.subprocess.Process
    pid: int | None
    launch_w: int  # its launch pipe's write end: one JSON line, then closed
    cancel_w: int  # its cancel pipe's write end (see ``LocalBackend.interrupt``), the container's from then on
    cancel_fd: int  # the cancel pipe's read end as the spare knows it
    env: dict[str, str] = field(default_factory=dict)  # what it was started with

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def end(self) -> None:
        """Close its pipes (it reads the end of its launch pipe and exits) and kill it; idempotent."""
        self._close_launch()
        if self.cancel_w >= 0:
            os.close(self.cancel_w)
            self.cancel_w = -1
        if self.alive:
            self.proc.kill()

    def _close_launch(self) -> None:
        if self.launch_w >= 0:
            os.close(self.launch_w)  # EOF: a spare not launched exits by itself
            self.launch_w = -1

    def launch(self, args: list[str], env: Mapping[str, str]) -> bool:
        """Make it the container ``args`` name, with ``env``; False when the line cannot go (then ``end`` it)."""
        changed = {k: v for k, v in env.items() if self.env.get(k) != v}
        line = json.dumps({"args": [*args, "--cancel-fd", str(self.cancel_fd)], "env": changed,
                           "unset": [k for k in self.env if k not in env]}).encode() + b"\n"
        try:
            if len(line) > LAUNCH_MAX_BYTES:
                return False
            os.write(self.launch_w, line)
            return True
        except OSError:
            return False
        finally:
            self._close_launch()


class Spares:
    """Keeps ``count`` spares started; ``take`` hands one out (and starts its replacement)."""

    def __init__(self, sandbox: Bubblewrap | None, count: int, sandbox_state: str = "") -> None:
        self.sandbox = sandbox
        self.sandbox_state = sandbox_state  # what the status says of a sandbox that is off
        self.count = count
        self.ready: list[Spare] = []  # started, their pid known: to be given out
        self.spawned: list[Spare] = []  # every spare not given out (ready or still starting)
        self.starting = 0
        self.closed = False
        self.ending: list[asyncio.subprocess.Process] = []  # killed by ``close``, not reaped yet
        self.spawned_one = asyncio.Event()  # a spare's process was started (or failed to be)
        self.tasks: set[asyncio.Future[None]] = set()  # spares being started (never cancelled: see wait_closed)
        self.env = base_environment()

    @classmethod
    async def begin(cls, sock_dir: str, state_dir: Path, shares: Sequence[str]) -> Spares:
        """Find the sandbox and start the spares, first thing: back once their processes exist, so the
        daemon's imports (which hold the loop) and the spares' run side by side."""
        sandbox, state = find_sandbox(sock_dir, state_dir, shares)
        spares = cls(sandbox, spare_count(), state)
        spares.fill()
        if spares.tasks:
            await spares.spawned_one.wait()
        return spares

    def fill(self) -> None:
        """Start spares until ``count`` are ready or starting (on the running loop)."""
        while not self.closed and len(self.ready) + self.starting < self.count:
            self.starting += 1
            task = asyncio.ensure_future(self._start())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def pids(self) -> list[int]:
        """The host pids of the live spares ready to be given out (for the status)."""
        return [s.pid for s in self.ready if s.alive and s.pid is not None]

    def take(self, startup_env: Mapping[str, str]) -> Spare | None:
        """A live spare whose interpreter started with ``startup_env``'s variables, or None."""
        for spare in [s for s in self.ready if not s.alive]:
            self._drop(spare)
            spare.end()
            log.warning("a spare container ended before it was used (code %s)", spare.proc.returncode)
        if not self.ready or startup_environment(self.env) != dict(startup_env):
            return None
        spare = self.ready[0]
        self._drop(spare)
        self.fill()
        return spare

    def _drop(self, spare: Spare) -> None:
        self.ready.remove(spare)
        self.spawned.remove(spare)

    def close(self) -> None:
        """Kill every spare not given out, started or starting (idempotent); ``wait_closed`` reaps them."""
        self.closed = True
        for spare in self.spawned:
            spare.end()
            self.ending.append(spare.proc)
        self.spawned.clear()
        self.ready.clear()

    async def wait_closed(self, timeout_s: float = 5.0) -> None:
        """Until every killed spare is reaped (before the loop closes: their pipes belong to it).

        Spares still starting are let finish first and killed then: a start cancelled midway waits for a
        process that waits for its launch pipe."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)
        ending, self.ending = self.ending, []
        for proc in ending:
            try:
                await asyncio.wait_for(proc.communicate(), timeout_s)
            except (asyncio.TimeoutError, OSError):
                log.warning("a spare container (pid %s) did not end when killed", proc.pid)

    async def _start(self) -> None:
        launch_r, launch_w = os.pipe()
        cancel_r, cancel_w = os.pipe()
        os.set_blocking(cancel_w, False)
        command = [sys.executable, "-m", "remotecell_runtime.container", "--spare-fd", str(launch_r)]
        info_r, info_w = os.pipe() if self.sandbox is not None else (None, None)
        if self.sandbox is not None:
            command = self.sandbox.argv(command, info_fd=info_w)
        passed = tuple(fd for fd in (launch_r, cancel_r, info_w) if fd is not None)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self.env, pass_fds=passed, start_new_session=True)
        except OSError as exc:
            log.warning("a spare container could not be started: %s", exc)
            self.spawned_one.set()
            self.starting -= 1
            for fd in (launch_w, cancel_w, *((info_r,) if info_r is not None else ())):
                os.close(fd)
            return
        finally:
            for fd in passed:
                os.close(fd)
        spare = Spare(proc, None, launch_w, cancel_w, cancel_r, self.env)
        self.spawned_one.set()
        if self.closed:  # closed while its process started: ``close`` did not see it
            spare.end()
            self.ending.append(proc)
        else:
            self.spawned.append(spare)  # from now on ``close`` kills it, even while its pid is asked
        if info_r is not None:
            spare.pid = await asyncio.get_running_loop().run_in_executor(None, container_pid, info_r)
        else:
            spare.pid = proc.pid
        self.starting -= 1
        if not self.closed:  # else ``close`` (or the branch above) killed it
            self.ready.append(spare)
