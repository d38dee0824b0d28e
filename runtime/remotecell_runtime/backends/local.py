"""The local backend: each container is a process on this host, ``python -m remotecell_runtime.container``.

The only module that knows containers are processes: it spawns them, reads their
output (the last ``LOG_TAIL_LINES`` kept for the exit report), signals them, and
turns an exit status into the sentence that says why one ended.

Invariants: a process is started in its own session (a ^C in the daemon's terminal
is not its), with the daemon's own runtime as its client's runtime; each has a
cancel pipe (ids of inputs to interrupt, read by its SIGINT handler) and its own
ipc:// socket for a leaseholder's direct calls in the daemon's private socket
folder, both gone when it exits; every process started is reported to ``on_exit``
once, when its output has closed and it has been reaped.  With a ``Bubblewrap``
(bubblewrap on this host) each process runs inside one, its volumes mounted at
their paths; without, its volumes are links the container makes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..cpus import CpuBudget
from ..gpus import GpuAllocator
from .base import ConnectBack, ContainerExit, ContainerImage, ContainerSpec, ExitCallback, SpecRefused

if TYPE_CHECKING:
    from ..auth import ContainerGate
from .limits import Limits
from .sandbox import DRIVER_INSIDE, Bubblewrap, container_pid
from .spares import VOLUMES_ENV, Spare, Spares, base_environment, spare_count, startup_environment

log = logging.getLogger("remotecell.runtime")

LOG_TAIL_LINES = 40
INTERRUPT_GRACE_S = 1.0  # SIGINT, then SIGTERM this much later
RELEASE_TRIES, RELEASE_RETRY_S = 20, 0.25  # removing a container's cgroups while its last processes exit
AGENT_SOCKET = "/run/remotecell/agent.sock"  # where a sandbox agent finds its own socket to the daemon


@dataclass
class _Process:
    spec: ContainerSpec
    proc: asyncio.subprocess.Process | None = None  # None while it is being spawned
    pid: int | None = None  # the container's own process (inside a sandbox, not bwrap's)
    cancel_w: int | None = None  # the cancel pipe's write end
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    stopping: bool = False  # stopped before its process existed: killed as soon as it does


class LocalBackend:
    """Containers as local processes that connect back over ipc:// and may use this host's shared memory."""

    def __init__(self, sock_dir: str, runtime_id: str, shm_prefix: str, client_env: dict[str, str],
                 gpus: GpuAllocator, cpus: CpuBudget, sandbox: Bubblewrap | None = None,
                 limits: Limits | None = None, spares: Spares | None = None) -> None:
        self.sock_dir = sock_dir  # private (0700): the daemon's socket and the containers' own
        self.sandbox = sandbox
        self.limits = limits  # None: memory= is watched by the pools' polling instead
        self.shm_prefix = shm_prefix
        self.client_env = client_env  # user code in a container talks to this runtime as a client
        self.gpus = gpus
        self.cpus = cpus
        address = f"ipc://{os.path.join(sock_dir, f'containers-{runtime_id}.sock')}"
        self._connect_back = ConnectBack(bind=address, connect=address, same_host=True)
        self.processes: dict[str, _Process] = {}
        self.spares = spares or Spares(sandbox, spare_count())  # warm ones (see ``spares.py``), started at ``bound``

    @property
    def connect_back(self) -> ConnectBack:
        return self._connect_back

    def bound(self, endpoint: str, gate: ContainerGate | None) -> None:
        self.spares.fill()  # its ipc:// address is known before the bind; nothing to admit

    def load_env(self, cid: str) -> dict[str, str]:
        return {}  # its process is started with its environment

    def close(self) -> None:
        self.spares.close()

    def check(self, spec: ContainerSpec) -> None:
        why = (self.gpus.unsatisfiable(spec.gpu) if spec.gpu else None) or self.cpus.unsatisfiable(spec.cpu)
        if spec.options.block_network and self.sandbox is None:
            why = ("block_network=True needs the container sandbox, which this runtime does not use: start it "
                   "with bubblewrap installed and without REMOTECELL_SANDBOX=0 (`remotecell status` says why it is "
                   "off)")
        if why:
            raise SpecRefused(why)

    def start(self, spec: ContainerSpec, on_exit: ExitCallback) -> None:
        process = self.processes[spec.cid] = _Process(spec)
        env = self._environment(spec)
        spare = self.spares.take(startup_environment(env)) if self._default_shape(spec) else None
        if spare is not None and self._launch(process, spare, env):
            asyncio.ensure_future(self._follow(process, on_exit))
            return
        asyncio.ensure_future(self._run(process, env, on_exit))

    def _default_shape(self, spec: ContainerSpec) -> bool:
        """Whether ``spec``'s container starts as a spare did: the default image in the default sandbox (no
        volumes mounted, no GPU devices, network, disk or cgroup limits), a function server."""
        opts = spec.options
        return (spec.image is None and spec.agent is None and not spec.gpus and not opts.block_network
                and not opts.ephemeral_disk_mib and not (self.sandbox is not None and spec.env.get(VOLUMES_ENV))
                and not (self.limits is not None and (opts.memory_cap_mib or opts.cpu_limit)))

    def _launch(self, process: _Process, spare: Spare, env: dict[str, str]) -> bool:
        """Make ``spare`` ``process``'s container; False when it could not be told (a new process then)."""
        spec = process.spec
        if not spare.launch(["--connect", spec.connect, "--id", spec.cid, "--direct", self._direct_path(spec.cid)],
                            env):
            spare.end()
            return False
        process.proc, process.pid, process.cancel_w = spare.proc, spare.pid, spare.cancel_w
        if process.stopping:
            self._signal(process, signal.SIGKILL)
        return True

    def _environment(self, spec: ContainerSpec) -> dict[str, str]:
        env = {**base_environment(), **image_environment(spec.image), **spec.env, **self.client_env}
        # Segment names carry the pid, which repeats across sandboxes (each its own pid namespace, one /dev/shm):
        # the container's id makes them unique; the runtime's prefix still sweeps them all.
        env["REMOTECELL_SHM_PREFIX"] = f"{self.shm_prefix}-{spec.cid}"
        env["REMOTECELL_TASK_ID"] = spec.cid  # which container this is (its pid may repeat: sandboxes have their own)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # number devices as nvidia-smi does
        if self.sandbox is not None:
            env.pop(VOLUMES_ENV, None)  # mounted by the sandbox instead
        if self.sandbox is not None and spec.image is not None and spec.image.rootfs and spec.gpus:
            # the host's driver, bound there by the sandbox (an image's own system has none)
            env["LD_LIBRARY_PATH"] = ":".join(p for p in (f"{DRIVER_INSIDE}/lib64", env.get("LD_LIBRARY_PATH")) if p)
            env["PATH"] = f"{env.get('PATH', '')}:{DRIVER_INSIDE}/bin"
        return env

    def _command(self, spec: ContainerSpec, cancel_r: int,
                 procs: list[str]) -> tuple[list[str], tuple[int, int] | None]:
        """The container's command line (in its sandbox when there is one, joining the cgroups of ``procs``),
        and the sandbox's info pipe."""
        python = spec.image.python if spec.image else sys.executable
        connect, socket = spec.connect, None
        if spec.agent is not None:  # its own socket, and in a sandbox that socket alone, at a path of its own
            socket = (spec.agent, AGENT_SOCKET) if self.sandbox is not None else None
            connect = f"ipc://{AGENT_SOCKET if socket else spec.agent}"
        module = "remotecell_runtime.container" if spec.agent is None else "remotecell_runtime.sandbox_agent"
        command = [python, "-m", module, "--connect", connect, "--id", spec.cid, "--cancel-fd", str(cancel_r)]
        if spec.agent is None:
            command += ["--direct", self._direct_path(spec.cid)]
        if self.sandbox is None:
            return Limits.wrap(procs, command), None
        info_r, info_w = os.pipe()
        volumes = json.loads(spec.env.get(VOLUMES_ENV) or "{}")
        image = spec.image or ContainerImage(sys.executable)
        sandboxed = self.sandbox.argv(command, info_fd=info_w, volumes=volumes, extra_roots=image.roots,
                                      files=image.files, workdir=image.workdir, rootfs=image.rootfs,
                                      block_network=spec.options.block_network,
                                      gpu_minors=self.gpus.minors(spec.gpus), socket=socket,
                                      disk_mib=spec.options.ephemeral_disk_mib)
        return Limits.wrap(procs, sandboxed), (info_r, info_w)

    async def _run(self, process: _Process, env: dict[str, str], on_exit: ExitCallback) -> None:
        spec = process.spec
        try:
            procs = self.limits.prepare(spec.cid, spec.options.memory_cap_mib, spec.options.cpu_limit) \
                if self.limits else []
        except OSError as exc:
            self._ended(process, ContainerExit(f"its limits could not be set: {exc}"), on_exit)
            return
        cancel_r, cancel_w = os.pipe()
        os.set_blocking(cancel_w, False)
        command, info = self._command(spec, cancel_r, procs)
        passed = (cancel_r,) if info is None else (cancel_r, info[1])
        try:
            process.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                pass_fds=passed,
                start_new_session=True,  # a ^C in the daemon's terminal is not theirs
            )
        except OSError as exc:
            os.close(cancel_w)
            if info is not None:
                os.close(info[0])
            self._ended(process, ContainerExit(f"it could not be started: {exc}"), on_exit)
            return
        finally:
            for fd in passed:
                os.close(fd)
        process.pid = process.proc.pid if info is None else await _child_pid(info[0])
        process.cancel_w = cancel_w
        if process.stopping:  # stopped while its process was starting
            self._signal(process, signal.SIGKILL)
        await self._follow(process, on_exit)

    async def _follow(self, process: _Process, on_exit: ExitCallback) -> None:
        """Keep its last lines of output until it ends; then report how it ended."""
        spec = process.spec
        assert process.proc is not None and process.proc.stdout is not None
        async for raw in process.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            process.tail.append(line)
            log.debug("[%s] %s", spec.cid, line)
        code = await process.proc.wait()
        if self.sandbox is not None and code > 128:  # bwrap exits 128 + N for a container killed by signal N
            code = 128 - code
        self._ended(process, ContainerExit(self._cause(spec, code), code, tuple(process.tail)), on_exit)

    def _cause(self, spec: ContainerSpec, code: int) -> str:
        if self.limits is not None and self.limits.oom_killed(spec.cid):
            return (f"it ran out of memory: the kernel killed it at its limit of memory="
                    f"{spec.options.memory_cap_mib} MiB")
        return _cause(code)

    def _direct_path(self, cid: str) -> str:
        return os.path.join(self.sock_dir, f"{cid}.sock")

    def _ended(self, process: _Process, exit: ContainerExit, on_exit: ExitCallback) -> None:
        if process.cancel_w is not None:
            os.close(process.cancel_w)
            process.cancel_w = None
        try:  # a killed container leaves its socket file behind
            os.unlink(self._direct_path(process.spec.cid))
        except FileNotFoundError:
            pass
        self.processes.pop(process.spec.cid, None)
        self._release_limits(process.spec.cid, RELEASE_TRIES)
        on_exit(process.spec.cid, exit)

    def _release_limits(self, cid: str, tries: int) -> None:
        if self.limits is not None and not self.limits.release(cid) and tries > 1:
            asyncio.get_running_loop().call_later(RELEASE_RETRY_S, self._release_limits, cid, tries - 1)

    def _signal(self, process: _Process, sig: int) -> None:
        if process.pid is not None and process.proc is not None and process.proc.returncode is None:
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                pass

    def _signal_cid(self, cid: str, sig: int) -> None:
        process = self.processes.get(cid)
        if process is not None:
            self._signal(process, sig)

    def stop(self, cid: str, grace_s: float, *, interrupt: bool = False, asked: bool = False) -> None:
        """SIGTERM now (after SIGINT and ``INTERRUPT_GRACE_S`` with ``interrupt``; not at all when ``asked``),
        SIGKILL ``grace_s`` later."""
        process = self.processes.get(cid)
        if process is None:
            return
        process.stopping = True
        loop = asyncio.get_running_loop()
        if interrupt:  # let the running code unwind first
            self._signal(process, signal.SIGINT)
            loop.call_later(INTERRUPT_GRACE_S, self._signal_cid, cid, signal.SIGTERM)
            grace_s += INTERRUPT_GRACE_S
        elif not asked:
            self._signal(process, signal.SIGTERM)
        loop.call_later(grace_s, self._signal_cid, cid, signal.SIGKILL)

    def kill(self, cid: str) -> None:
        self._signal_cid(cid, signal.SIGKILL)

    def interrupt(self, cid: str, input_id: str) -> None:
        """Write ``input_id`` to the cancel pipe and SIGINT: its handler raises only if that input runs."""
        process = self.processes.get(cid)
        if process is None or process.cancel_w is None:
            return
        try:
            os.write(process.cancel_w, input_id.encode() + b"\n")
        except OSError:  # gone, or the pipe is full of names it never read
            return
        self._signal(process, signal.SIGINT)

    def alive(self, cid: str) -> bool:
        process = self.processes.get(cid)
        return process is not None and process.proc is not None and process.proc.returncode is None

    def placement(self, cid: str) -> str:
        process = self.processes.get(cid)
        if process is None or process.pid is None:
            return "a local process (not running)"
        return f"pid {process.pid} on this host" + (" in a sandbox" if self.sandbox else "")

    def memory_mib(self, cid: str) -> float | None:
        """Resident memory of the container's process, from /proc (Linux)."""
        process = self.processes.get(cid)
        if process is None or process.pid is None:
            return None
        try:
            with open(f"/proc/{process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


def image_environment(image: ContainerImage | None) -> dict[str, str]:
    """An image's variables, its import path (not the host's ``PYTHONPATH``: the image is its own environment)
    and its venv first on ``PATH`` (a ``python`` its code runs is the image's)."""
    if image is None:  # the runtime's own Python, first on PATH: ``base_environment``
        return {}
    venv = os.path.dirname(os.path.dirname(image.python))
    paths = [*image.pythonpath, image.env.get("PYTHONPATH", "")]
    return {**image.env, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "VIRTUAL_ENV": venv,
            "PATH": os.pathsep.join([os.path.join(venv, "bin"), image.env.get("PATH") or os.environ.get("PATH", "")])}


async def _child_pid(info_r: int) -> int | None:
    return await asyncio.get_running_loop().run_in_executor(None, container_pid, info_r)


def _cause(code: int) -> str:
    if code < 0:
        return f"it was killed by signal {signal.Signals(-code).name}"
    return f"it exited with code {code}"
