"""Sandboxes (Modal's ``Sandbox``): containers that run the user's own command, and what is exec'd in them.

A sandbox is a container of its app's image, with its volumes, secrets, limits and GPUs, as a
function's container gets them (the same ``ContainerManager`` and backend, the same host check), but
its process is the sandbox agent (``remotecell_runtime.sandbox_agent``), which starts the sandbox's
command as process ``main`` and each ``exec`` as another, and relays their bytes.  Here the daemon keeps,
per process and stream, the bytes the agent sent until a client reads them (``StreamBuffer``), answers
reads and waits (long-polls of at most ``WAIT_MAX_S``), forwards stdin and signals, and ends the sandbox
when its command exits, at its ``timeout_s``, on ``sandbox_terminate``, or when its app stops.  An agent
talks to the daemon on a socket of its own sandbox (``AgentLinks``), never on the containers' one: what its
untrusted processes can reach of the runtime is that socket alone.

Invariants: bytes are routed, never decoded or unpickled; a stream keeps at most ``MEMORY_BYTES`` unread in
memory (an ended one ``SETTLE_BYTES``) and the rest in its spill file (unlinked at once: gone with the
daemon), and past ``SPILL_BYTES`` unread the agent gets no more credit, so the writer waits in its write and
nothing is dropped; bytes stay until the reader acknowledges them; a process that ended keeps its unread
output readable until the sandbox record is dropped (``KEEP_S`` after it finished); every process of a
finished sandbox has an exit code and ended streams; a sandbox's GPUs and CPU share are reserved from its
start until its container's exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zmq

from ..backends.base import ContainerSpec
from ..containers import ContainerRecord, State
from ..cpus import thread_env
from ..images import Build
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Frame, Payload, WireError
from ..protocol.message import Message, encode
from ..protocol.messages.sandboxes import (
    MAIN,
    MAX_WINDOW,
    NAME_PATTERN,
    READ_MAX_BYTES,
    STREAMS,
    WAIT_MAX_S,
    AgentCreditMsg,
    AgentExecMsg,
    AgentExitMsg,
    AgentHelloMsg,
    AgentInMsg,
    AgentKillMsg,
    AgentOutMsg,
    AgentResizeMsg,
    AgentStopMsg,
    AgentWroteMsg,
    PtySpec,
    SandboxCreateMsg,
    SandboxCreateReply,
    SandboxExecMsg,
    SandboxExecReply,
    SandboxGetMsg,
    SandboxGetReply,
    SandboxInfo,
    SandboxListMsg,
    SandboxListReply,
    SandboxReadMsg,
    SandboxReadReply,
    SandboxResizeMsg,
    SandboxTerminateMsg,
    SandboxWaitMsg,
    SandboxWaitReply,
    SandboxWriteMsg,
)
from ..protocol.messages.session import EmptyReply
from ..protocol.options import FunctionOptions
from .apps import Apps
from .base import Handler, Host, Report, Request, Service, refusal, with_id
from .functions import Functions

log = logging.getLogger("remotecell.runtime")

MEMORY_BYTES = 2 << 20  # of one stream's unread bytes, in the daemon's memory; the rest in its spill file
SETTLE_BYTES = 64 << 10  # an ended stream with more than this unread in memory moves it to its spill file
SPILL_BYTES = 1 << 30  # of one stream unread, before its writer is made to wait
CREDIT_STEP_BYTES = 1 << 20  # credit goes back to the agent in steps of this much
KEEP_S = 600.0  # a finished sandbox stays readable (output, exit code, from_id) this long
STOP_GRACE_S = 5.0  # after sb_stop, the agent is killed if it has not exited
TIMEOUT_CODE, TERMINATED_CODE = 124, 137  # Modal's return codes of a sandbox that timed out / was terminated
FINISHED = ("exited", "timeout", "terminated", "failed")

Answer = Callable[[Message, list[Payload]], None]


@dataclass
class StreamBuffer:
    """What one stream of one process sent and no reader took yet, and the readers waiting for some.

    The oldest ``MEMORY_BYTES`` are in memory, what came after them in a spill file (unlinked at once, in
    ``STATE/sandboxes``; emptied whenever a reader catches up); ``owed``: bytes received but not yet given
    back to the agent as credit (held while ``SPILL_BYTES`` wait unread, so the writer then waits)."""

    spill_dir: Path
    chunks: deque[bytes] = field(default_factory=deque)
    size: int = 0  # in memory
    eof: bool = False
    readers: deque[tuple[int, Answer, asyncio.TimerHandle | None]] = field(default_factory=deque)
    spill: IO[bytes] | None = None
    spill_start: int = 0  # the unread part of the spill file: [spill_start, spill_end)
    spill_end: int = 0
    owed: int = 0
    base: int = 0  # where in the stream its oldest kept byte is (what came before was acknowledged)

    @property
    def unread(self) -> int:
        return self.size + self.spill_end - self.spill_start

    def add(self, data: bytes, eof: bool) -> None:
        self.eof = self.eof or eof
        if not data:
            return
        self.owed += len(data)
        if self.spill_end == self.spill_start and self.size + len(data) <= MEMORY_BYTES:
            self.chunks.append(data)
            self.size += len(data)
            return
        if self.spill is None:
            self.spill = tempfile.TemporaryFile(dir=self.spill_dir, prefix="stream-")
        os.pwrite(self.spill.fileno(), data, self.spill_end)
        self.spill_end += len(data)

    def ack(self, upto: int) -> None:
        """The reader has the stream up to ``upto``: drop those bytes (not copied: nobody reads them again)."""
        drop = min(upto - self.base, self.unread)
        if drop <= 0:
            return
        self.base += drop
        while drop and self.chunks:
            chunk = self.chunks[0]
            if len(chunk) <= drop:
                self.chunks.popleft()
            else:
                self.chunks[0] = chunk[drop:]
            cut = min(len(chunk), drop)
            self.size -= cut
            drop -= cut
        if drop and self.spill is not None:
            self.spill_start += drop
            if self.spill_start == self.spill_end:  # caught up: the file starts again, empty
                self.spill_start = self.spill_end = 0
                os.ftruncate(self.spill.fileno(), 0)

    def peek(self, n: int) -> bytes:
        """Up to ``n`` of the oldest kept bytes (from ``base``), left in place until acknowledged."""
        out: list[bytes] = []
        got = 0
        for chunk in self.chunks:
            if got >= n:
                break
            out.append(chunk[:n - got])
            got += len(out[-1])
        if got < n and self.spill is not None and self.spill_end > self.spill_start:
            out.append(os.pread(self.spill.fileno(), min(n - got, self.spill_end - self.spill_start),
                                self.spill_start))
        return b"".join(out)

    def credit_due(self) -> int:
        """What to give back to the agent now: what it sent, once a step of it is there, unless too much waits."""
        if self.owed < CREDIT_STEP_BYTES and not (self.owed and self.unread == 0):
            return 0
        if self.unread >= SPILL_BYTES:
            return 0
        owed, self.owed = self.owed, 0
        return owed

    def settle(self) -> None:
        """The stream ended: what waits unread in memory goes to the spill file (the daemon keeps a finished
        sandbox's output for ``KEEP_S`` and should not hold it in memory so long), unless it is little."""
        if self.size <= SETTLE_BYTES:
            return
        settled = tempfile.TemporaryFile(dir=self.spill_dir, prefix="stream-")
        head = b"".join(self.chunks)
        os.pwrite(settled.fileno(), head, 0)
        if self.spill is not None:  # what the old file holds goes after it, copied by the kernel
            at, end, to = self.spill_start, self.spill_end, len(head)
            while at < end:
                n = os.copy_file_range(self.spill.fileno(), settled.fileno(), end - at, at, to)
                if n <= 0:
                    raise OSError(f"could not copy a sandbox stream's spill file at {at} of {end}")
                at, to = at + n, to + n
            self.spill.close()
        self.spill, self.spill_start, self.spill_end = settled, 0, self.unread
        self.chunks.clear()
        self.size = 0

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()
            self.spill = None


@dataclass
class SandboxProc:
    """One process of a sandbox: its streams, its exit, and who waits for what."""

    id: str
    cmd: list[str]
    spill_dir: Path
    code: int | None = None
    reason: str | None = None
    streams: dict[str, StreamBuffer] = field(default_factory=dict)
    waiters: list[tuple[Answer, asyncio.TimerHandle | None]] = field(default_factory=list)
    writes: deque[tuple[int, Answer]] = field(default_factory=deque)  # stdin chunks not yet in the pipe
    seq: int = 0
    stdin_closed: bool = False
    timer: asyncio.TimerHandle | None = None  # its exec timeout
    timed_out: bool = False

    def __post_init__(self) -> None:
        self.streams = {name: StreamBuffer(self.spill_dir) for name in STREAMS}


@dataclass
class SandboxRecord:
    """The runtime's record of one sandbox."""

    id: str
    app_id: str
    cmd: list[str]
    workdir: str | None
    options: FunctionOptions
    env: dict[str, str]
    name: str | None = None
    created_at: float = field(default_factory=time.time)
    status: str = "starting"
    reason: str | None = "waiting for its container to start"
    container: ContainerRecord | None = None
    agent_up: bool = False
    held: list[list[Frame]] = field(default_factory=list)  # for the agent, until it says hello
    procs: dict[str, SandboxProc] = field(default_factory=dict)
    waiters: list[tuple[Answer, asyncio.TimerHandle | None]] = field(default_factory=list)  # for its end
    gpus: list[int] = field(default_factory=list)
    cpu: float = 0.0
    timer: asyncio.TimerHandle | None = None
    finished_at: float | None = None  # monotonic
    next_proc: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def code(self) -> int | None:
        if self.status == "timeout":
            return TIMEOUT_CODE
        if self.status == "terminated":
            return TERMINATED_CODE
        if not self.finished:
            return None
        main = self.procs.get(MAIN)
        return main.code if main is not None and main.code is not None else (1 if self.status == "failed" else 0)

    def info(self) -> SandboxInfo:
        return SandboxInfo(id=self.id, app_id=self.app_id, status=self.status, name=self.name, cmd=self.cmd,
                           created_at=self.created_at, code=self.code, reason=self.reason,
                           container=self.container.id if self.container else None)

    def end_reply(self) -> SandboxWaitReply:
        return SandboxWaitReply(code=self.code, status=self.status, reason=self.reason)


class AgentLinks:
    """Each sandbox agent's own ZeroMQ socket (``SOCK/<sandbox id>.sock``, a ROUTER of this service's own
    context), bound into that sandbox alone: its processes can reach nothing of the runtime but it, and what
    comes on it is only ever about that sandbox (its agent's messages, by the agent's container id)."""

    def __init__(self, sock_dir: Path, on_message: Callable[[SandboxRecord, list[Frame]], None]) -> None:
        self.sock_dir = sock_dir
        self.on_message = on_message
        self.ctx: zmq.Context[Any] | None = None
        self.socks: dict[str, zmq.Socket[Any]] = {}  # sandbox id -> its socket
        for stale in sock_dir.glob("sb-*.sock"):  # an earlier run's, killed with it
            stale.unlink(missing_ok=True)

    def path(self, record: SandboxRecord) -> str:
        return str(self.sock_dir / f"{record.id}.sock")

    def open(self, record: SandboxRecord) -> str:
        """Bind the sandbox's socket; its host path (the agent's ``--connect``, bound into its sandbox)."""
        if self.ctx is None:
            self.ctx = zmq.Context()
        sock = self.ctx.socket(zmq.ROUTER)
        sock.router_mandatory = True
        sock.sndhwm = sock.rcvhwm = 0
        path = self.path(record)
        sock.bind(f"ipc://{path}")
        os.chmod(path, 0o600)
        self.socks[record.id] = sock
        asyncio.get_running_loop().add_reader(sock.FD, self._drain, record, sock)
        return path

    def _drain(self, record: SandboxRecord, sock: zmq.Socket[Any]) -> None:
        for _ in range(1000):  # yield to other work now and then under a flood
            if sock.closed or not int(sock.get(zmq.EVENTS)) & zmq.POLLIN:
                return
            try:
                self.on_message(record, framing.recv(sock, zmq.NOBLOCK))
            except (WireError, ValueError, KeyError, TypeError) as exc:  # malformed: maybe its processes' doing
                log.debug("bad message on the socket of sandbox %s: %s", record.id, exc)
            except Exception:
                log.exception("handling a message of the agent of sandbox %s failed", record.id)
        asyncio.get_running_loop().call_soon(self._drain, record, sock)

    def send(self, record: SandboxRecord, cid: str, frames: list[Frame]) -> None:
        sock = self.socks.get(record.id)
        if sock is None:
            return
        try:
            framing.send(sock, [cid.encode(), *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the agent is gone
            log.debug("could not send to the agent of %s: %s", record.id, exc)
        if int(sock.get(zmq.EVENTS)) & zmq.POLLIN:  # a send can consume the FD's edge: read what is queued
            asyncio.get_running_loop().call_soon(self._drain, record, sock)

    def close(self, record: SandboxRecord) -> None:
        sock = self.socks.pop(record.id, None)
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.FD)
        sock.close(linger=0)
        try:
            os.unlink(self.path(record))
        except FileNotFoundError:
            pass


class Sandboxes(Service):
    """The sandboxes of this runtime: their lives (create, exec, terminate, start, end) and the agents' news of
    them; their bytes and waits are ``SandboxStreams``'."""

    def __init__(self, host: Host, functions: Functions, apps: Apps, sock_dir: Path) -> None:
        self.host = host
        self.functions = functions
        self.apps = apps
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.by_container: dict[str, SandboxRecord] = {}
        self.spill_dir = host.state_dir / "sandboxes"  # streams' spill files (unlinked once open)
        self.spill_dir.mkdir(mode=0o700, exist_ok=True)
        self.streams = SandboxStreams(host, self)
        self.links = AgentLinks(sock_dir, self.on_agent_message)
        self.agent_handlers: dict[str, tuple[type[Message], Callable[[ContainerRecord, Report[Any]], None]]] = {
            cls.TYPE: (cls, handler) for cls, handler in (
                (AgentHelloMsg, self.on_hello), (AgentExitMsg, self.on_exit),
                (AgentOutMsg, self.streams.on_out), (AgentWroteMsg, self.streams.on_wrote))}
        functions.agent_exited = self.on_container_exit

    def handlers(self) -> dict[type[Message], Handler]:
        return {SandboxCreateMsg: self.on_create, SandboxExecMsg: self.on_exec,
                SandboxTerminateMsg: self.on_terminate, SandboxGetMsg: self.on_get, SandboxListMsg: self.on_list}

    def on_agent_message(self, record: SandboxRecord, frames: list[Frame]) -> None:
        """A message on the sandbox's own socket: from its agent (by its container id), else dropped."""
        container = record.container
        header = framing.decode_header(frames[1:])
        route = self.agent_handlers.get(header.get("t"))  # type: ignore[arg-type]
        if container is None or route is None or frames[0].bytes != container.id.encode():
            # debug only: the sandbox's own (untrusted) processes may reach this socket and must not flood the log
            log.debug("dropped %r on the socket of sandbox %s (not its agent's, or unknown)", header.get("t"),
                      record.id)
            return
        cls, handler = route
        handler(container, Report(cls.from_wire(header), header, frames[1:]))

    # -- client requests ---------------------------------------------------------------------

    def on_create(self, req: Request[SandboxCreateMsg]) -> SandboxCreateReply:
        msg = req.msg
        if self.apps.registry.get(msg.app_id) is None:
            raise refusal(ErrorName.NOT_FOUND, f"no app with id {msg.app_id!r} (it was stopped, or the runtime "
                          "restarted): create the sandbox inside a running app")
        _check_cmd(msg.cmd, allow_empty=True)
        _check_pty(msg.pty)
        _check_name(self.sandboxes.values(), msg.app_id, msg.name)
        env = self.apps.check_host(msg.options)
        options = FunctionOptions.from_wire(msg.options)
        if options.cpu:
            env = {**thread_env(options.cpu), **env}
        record = SandboxRecord(f"sb-{secrets.token_hex(8)}", msg.app_id, list(msg.cmd), msg.workdir, options, env,
                               msg.name)
        self.sandboxes[record.id] = record
        # Without a command, main is there all the same: empty streams, ended with the sandbox.
        record.procs[MAIN] = SandboxProc(MAIN, list(msg.cmd), self.spill_dir)
        if msg.cmd:
            self.to_agent(record, AgentExecMsg(proc=MAIN, cmd=list(msg.cmd), workdir=msg.workdir, pty=msg.pty))
        record.timer = asyncio.get_running_loop().call_later(options.timeout_s, self._timed_out, record)
        self._start(record)
        log.info("sandbox %s of app %s: %s", record.id, record.app_id, " ".join(msg.cmd) or "(idle)")
        return SandboxCreateReply(sandbox=record.id)

    def on_exec(self, req: Request[SandboxExecMsg]) -> SandboxExecReply:
        msg = req.msg
        record = self._live(msg.sandbox)
        _check_cmd(msg.cmd, allow_empty=False)
        _check_pty(msg.pty)
        if msg.timeout_s is not None and not 0 < msg.timeout_s <= 86400:
            raise refusal(ErrorName.INVALID, f"exec timeout={msg.timeout_s!r} is out of range: allowed 1 to 86400 s")
        unknown = set(msg.options) - {"env", "secrets"}
        if unknown:
            raise refusal(ErrorName.INVALID, f"exec takes env and secrets, not {sorted(unknown)}")
        env = self.apps.check_host(msg.options)  # its variables and secrets (named ones read here)
        record.next_proc += 1
        proc = SandboxProc(f"p{record.next_proc}", list(msg.cmd), self.spill_dir)
        record.procs[proc.id] = proc
        if msg.timeout_s is not None:
            proc.timer = asyncio.get_running_loop().call_later(msg.timeout_s, self._exec_timed_out, record, proc)
        self.to_agent(record, AgentExecMsg(proc=proc.id, cmd=list(msg.cmd), workdir=msg.workdir or record.workdir,
                                           env=env, pty=msg.pty))
        return SandboxExecReply(proc=proc.id)

    def on_terminate(self, req: Request[SandboxTerminateMsg]) -> EmptyReply:
        self.terminate(self.record(req.msg.sandbox), "terminated", "terminated by its owner")
        return EmptyReply()

    def on_get(self, req: Request[SandboxGetMsg]) -> SandboxGetReply:
        msg = req.msg
        if msg.sandbox is not None:
            return SandboxGetReply(info=self.record(msg.sandbox).info())
        if msg.app is None or msg.name is None:
            raise refusal(ErrorName.INVALID, "sandbox_get needs 'sandbox' (an id), or 'app' and 'name'")
        named = [r for r in self.sandboxes.values() if r.name == msg.name and not r.finished
                 and getattr(self.apps.registry.get(r.app_id), "name", None) == msg.app]
        if not named:
            raise refusal(ErrorName.NOT_FOUND, f"no running sandbox named {msg.name!r} in an app named {msg.app!r} "
                          "(it finished, or was never made: Sandbox.create(..., name=...))")
        return SandboxGetReply(info=max(named, key=lambda r: r.created_at).info())


    def on_list(self, req: Request[SandboxListMsg]) -> SandboxListReply:
        app_id = req.msg.app_id
        return SandboxListReply(sandboxes=[r.info() for r in self.sandboxes.values()
                                           if not r.finished and (app_id is None or r.app_id == app_id)])

    # -- the agent's messages ----------------------------------------------------------------

    def on_hello(self, container: ContainerRecord, report: Report[AgentHelloMsg]) -> None:
        record = self.by_container.get(container.id)
        if record is None:
            return
        container.ready, container.state = True, State.BUSY
        record.agent_up = True
        if not record.finished:
            record.status, record.reason = "running", None
        for frames in record.held:
            self.links.send(record, container.id, frames)
        record.held.clear()

    def on_exit(self, container: ContainerRecord, report: Report[AgentExitMsg]) -> None:
        record = self.by_container.get(container.id)
        proc = record.procs.get(report.msg.proc) if record else None
        if record is None or proc is None or proc.code is not None:
            return
        code = report.msg.code
        limits = self.functions.limits
        if code == 128 + 9 and limits is not None and limits.oom_killed(container.id):
            proc.reason = (f"it ran out of memory: the kernel killed it at its limit of memory="
                           f"{record.options.memory_cap_mib} MiB")
            proc.streams["stderr"].add(f"remotecell: {proc.reason}\n".encode(), False)
        self._ended(record, proc, TIMEOUT_CODE if proc.timed_out else code)
        if proc.id == MAIN:
            self._finish(record, "exited", proc.reason or f"its command exited with code {proc.code}")

    def on_container_exit(self, container: ContainerRecord) -> None:
        """Its container is gone: whatever did not end ends now, with why."""
        record = self.by_container.pop(container.id, None)
        if record is None:
            return
        self.links.close(record)
        self.functions.gpus.release(record.gpus)
        self.functions.cpus.release(record.cpu)
        record.gpus, record.cpu = [], 0.0
        cause = container.stop_reason or (container.exit.cause if container.exit else "it vanished")
        if not record.agent_up:
            tail = "\n".join(container.exit.tail[-10:]) if container.exit else ""
            self._finish(record, "failed", f"its container could not start: {cause}" + (f"\n{tail}" if tail else ""))
        self._finish(record, "failed", f"its container ended: {cause}")
        self._end_all(record)

    # -- starting and ending -----------------------------------------------------------------

    def _start(self, record: SandboxRecord) -> None:
        """Its container, once its image is built and its CPUs and GPUs are free (else tried again each tick)."""
        opts = record.options
        image = self.functions.images.start(opts.image) if opts.image else None
        if isinstance(image, Build):
            if image.error is not None:
                self._finish(record, "failed", f"its image could not be built: {image.error}")
                self._end_all(record)
            else:
                record.reason = image.progress()
            return
        cpu = opts.cpu or 0.0
        if cpu and not self.functions.cpus.acquire(cpu):
            record.reason = f"waiting for CPUs (cpu={cpu:g}; {self.functions.cpus.describe()})"
            self.functions.reclaim_for(f"sandbox {record.id}", record.reason, lambda c: c.cpus > 0)
            return
        gpus: list[int] = []
        if opts.gpu:
            got = self.functions.gpus.acquire(opts.gpu)
            if got is None:
                self.functions.cpus.release(cpu)
                record.reason = f"waiting for a GPU ({opts.gpu})"
                self.functions.reclaim_for(f"sandbox {record.id}", record.reason, lambda c: bool(c.gpus))
                return
            gpus = got
        record.gpus, record.cpu = gpus, cpu
        record.reason = "waiting for its container to start"
        spec = ContainerSpec(record.id, opts, record.env, image, tuple(gpus), cpu, agent=self.links.open(record))
        record.container = self.functions.containers.start(spec)
        self.by_container[record.container.id] = record

    def terminate(self, record: SandboxRecord, status: str, reason: str) -> None:
        if record.finished:
            return
        self._finish(record, status, reason)
        container = record.container
        if container is None or container.state is State.DEAD:  # never started: nothing runs
            self._end_all(record)
            return
        self.functions.containers.stop(container, reason, STOP_GRACE_S, asked=True)  # sb_stop first: _finish

    def _end_all(self, record: SandboxRecord) -> None:
        """Nothing runs there any more: every process ends (137), its streams too; a failure's reason is the
        last line of the command's stderr."""
        if record.status == "failed" and record.reason:
            record.procs[MAIN].streams["stderr"].add(f"remotecell: sandbox {record.reason}\n".encode(), False)
        for proc in record.procs.values():
            for buffer in proc.streams.values():
                buffer.add(b"", True)
            self._ended(record, proc, TERMINATED_CODE)
            self.streams.wake_readers(record, proc)

    def _finish(self, record: SandboxRecord, status: str, reason: str) -> None:
        if record.finished:
            return
        record.status, record.reason = status, reason
        record.finished_at = time.monotonic()
        if record.timer is not None:
            record.timer.cancel()
        log.info("sandbox %s %s: %s", record.id, status, reason)
        for answer, timer in record.waiters:
            if timer is not None:
                timer.cancel()
            answer(record.end_reply(), [])
        record.waiters.clear()
        if status != "exited" and record.container is not None:  # the agent ends the others when main exits
            self.to_agent(record, AgentStopMsg())

    def _ended(self, record: SandboxRecord, proc: SandboxProc, code: int) -> None:
        if proc.code is not None:
            return
        proc.code = code
        if proc.timer is not None:
            proc.timer.cancel()
        for answer, timer in proc.waiters:
            if timer is not None:
                timer.cancel()
            answer(_proc_reply(proc), [])
        proc.waiters.clear()
        while proc.writes:
            proc.writes.popleft()[1](EmptyReply(), [])

    def _timed_out(self, record: SandboxRecord) -> None:
        self.terminate(record, "timeout", f"it ran past its timeout of {record.options.timeout_s:g} s")

    def _exec_timed_out(self, record: SandboxRecord, proc: SandboxProc) -> None:
        if proc.code is None:
            proc.timed_out = True
            proc.reason = "it ran past its exec timeout"
            self.to_agent(record, AgentKillMsg(proc=proc.id, signal=9))

    # -- helpers ----------------------------------------------------------------------------

    def to_agent(self, record: SandboxRecord, msg: Message, payloads: list[Payload] | None = None) -> None:
        frames = encode(msg, payloads or [])
        if record.agent_up and record.container is not None:
            if record.container.state is not State.DEAD:
                self.links.send(record, record.container.id, frames)
        else:
            record.held.append(frames)

    def record(self, sandbox_id: str) -> SandboxRecord:
        record = self.sandboxes.get(sandbox_id)
        if record is None:
            raise refusal(ErrorName.NOT_FOUND, f"no sandbox {sandbox_id!r} on this runtime (it finished more than "
                          f"{KEEP_S:g} s ago, or the runtime restarted)")
        return record

    def _live(self, sandbox_id: str) -> SandboxRecord:
        record = self.record(sandbox_id)
        if record.finished:
            raise refusal(ErrorName.INVALID, f"sandbox {sandbox_id} has finished ({record.status}: {record.reason}); "
                          "create a new one")
        return record

    def proc(self, record: SandboxRecord, proc_id: str) -> SandboxProc:
        proc = record.procs.get(proc_id)
        if proc is None:
            raise refusal(ErrorName.NOT_FOUND, f"sandbox {record.id} has no process {proc_id!r}")
        return proc

    # -- service hooks -----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for record in list(self.sandboxes.values()):
            if record.finished:
                if record.finished_at is not None and now - record.finished_at > KEEP_S:
                    del self.sandboxes[record.id]
                    for proc in record.procs.values():
                        for buffer in proc.streams.values():
                            buffer.close()
            elif self.apps.registry.get(record.app_id) is None:
                self.terminate(record, "terminated", "its app stopped")
            elif record.container is None:
                self._start(record)

    def close(self) -> None:
        """End every sandbox; their sockets stay open while the daemon waits for the containers to leave (their
        agents' last messages still arrive), and go with the daemon's process."""
        for record in list(self.sandboxes.values()):
            self.terminate(record, "terminated", "the runtime is shutting down")

    def stats(self) -> list[dict[str, Any]]:
        """For ``status``: the sandboxes that have not finished."""
        return [r.info().fields() for r in self.sandboxes.values() if not r.finished]


class SandboxStreams(Service):
    """The bytes of sandboxes' processes: reads (long-polled), stdin, waits for an exit, and the agents' output."""

    def __init__(self, host: Host, core: Sandboxes) -> None:
        self.host = host
        self.core = core

    def handlers(self) -> dict[type[Message], Handler]:
        return {SandboxReadMsg: self.on_read, SandboxWriteMsg: self.on_write, SandboxWaitMsg: self.on_wait,
                SandboxResizeMsg: self.on_resize}

    def on_read(self, req: Request[SandboxReadMsg]) -> None:
        msg = req.msg
        record = self.core.record(msg.sandbox)
        if msg.stream not in STREAMS:
            raise refusal(ErrorName.INVALID, f"stream {msg.stream!r} is not one of {', '.join(STREAMS)}")
        buffer = self.core.proc(record, msg.proc).streams[msg.stream]
        n = max(1, min(msg.n, READ_MAX_BYTES))
        if msg.offset is not None:
            buffer.ack(msg.offset)
            self._credit(record, msg.proc, msg.stream)
        answer = _answerer(self.host, req)
        if buffer.unread or buffer.eof or msg.wait_s <= 0:
            self._give(record, msg.proc, msg.stream, n, answer)
            return
        timer = asyncio.get_running_loop().call_later(min(msg.wait_s, WAIT_MAX_S), self._read_waited, record,
                                                      msg.proc, msg.stream, answer)
        buffer.readers.append((n, answer, timer))

    def on_write(self, req: Request[SandboxWriteMsg]) -> None:
        msg = req.msg
        record = self.core.record(msg.sandbox)
        proc = self.core.proc(record, msg.proc)
        if any(p.shm for p in req.payloads) or len(req.payloads) > 1:
            raise refusal(ErrorName.INVALID, "sandbox_write takes one raw payload (no shared memory)")
        answer = _answerer(self.host, req)
        if record.finished or proc.code is not None or proc.stdin_closed:
            answer(EmptyReply(), [])  # nobody reads it any more, as a pipe whose reader is gone
            return
        data = b"".join(bytes(framing.buffer_of(f)) for p in req.payloads for f in p.frames)
        proc.seq += 1
        proc.stdin_closed = msg.eof
        proc.writes.append((proc.seq, answer))
        self.core.to_agent(record, AgentInMsg(proc=proc.id, seq=proc.seq, eof=msg.eof), [Payload([data])])

    def on_wait(self, req: Request[SandboxWaitMsg]) -> SandboxWaitReply | None:
        msg = req.msg
        record = self.core.record(msg.sandbox)
        if msg.proc == MAIN:  # the sandbox's own end
            if record.finished or msg.wait_s <= 0:
                return record.end_reply()
            waiters = record.waiters
        else:
            proc = self.core.proc(record, msg.proc)
            if proc.code is not None or msg.wait_s <= 0:
                return _proc_reply(proc)
            waiters = proc.waiters
        answer = _answerer(self.host, req)
        timer = asyncio.get_running_loop().call_later(min(msg.wait_s, WAIT_MAX_S), self._wait_waited, record,
                                                      msg.proc, answer)
        waiters.append((answer, timer))
        return None

    def on_resize(self, req: Request[SandboxResizeMsg]) -> EmptyReply:
        """A terminal's new window size, for the agent to set (a process without a terminal ignores it)."""
        msg = req.msg
        record = self.core.record(msg.sandbox)
        proc = self.core.proc(record, msg.proc)
        _check_size(msg.rows, msg.cols)
        if not record.finished and proc.code is None:
            self.core.to_agent(record, AgentResizeMsg(proc=proc.id, rows=msg.rows, cols=msg.cols))
        return EmptyReply()

    def on_out(self, container: ContainerRecord, report: Report[AgentOutMsg]) -> None:
        record = self.core.by_container.get(container.id)
        proc = record.procs.get(report.msg.proc) if record else None
        if record is None or proc is None or report.msg.stream not in STREAMS:
            return
        data = b"".join(bytes(framing.buffer_of(f)) for p in report.payloads() for f in p.frames)
        buffer = proc.streams[report.msg.stream]
        buffer.add(data, report.msg.eof)
        self._credit(record, proc.id, report.msg.stream)
        if buffer.eof:
            buffer.settle()
        while buffer.readers and (buffer.unread or buffer.eof):
            n, answer, timer = buffer.readers.popleft()
            if timer is not None:
                timer.cancel()
            self._give(record, proc.id, report.msg.stream, n, answer)

    def on_wrote(self, container: ContainerRecord, report: Report[AgentWroteMsg]) -> None:
        record = self.core.by_container.get(container.id)
        proc = record.procs.get(report.msg.proc) if record else None
        while proc is not None and proc.writes and proc.writes[0][0] <= report.msg.seq:
            proc.writes.popleft()[1](EmptyReply(), [])

    def _give(self, record: SandboxRecord, proc_id: str, stream: str, n: int, answer: Answer) -> None:
        buffer = record.procs[proc_id].streams[stream]
        data = buffer.peek(n)  # dropped once the reader's next read says it has them
        answer(SandboxReadReply(eof=buffer.eof and len(data) == buffer.unread, offset=buffer.base), [Payload([data])])

    def _credit(self, record: SandboxRecord, proc_id: str, stream: str) -> None:
        """Let the agent send as much again as it sent, unless ``SPILL_BYTES`` of that stream wait unread."""
        n = record.procs[proc_id].streams[stream].credit_due()
        if n and not record.finished and record.container is not None:
            self.core.to_agent(record, AgentCreditMsg(proc=proc_id, stream=stream, n=n))

    def wake_readers(self, record: SandboxRecord, proc: SandboxProc) -> None:
        for stream, buffer in proc.streams.items():
            while buffer.readers:
                n, answer, timer = buffer.readers.popleft()
                if timer is not None:
                    timer.cancel()
                self._give(record, proc.id, stream, n, answer)

    def _read_waited(self, record: SandboxRecord, proc_id: str, stream: str, answer: Answer) -> None:
        buffer = record.procs[proc_id].streams[stream]
        for entry in list(buffer.readers):
            if entry[1] is answer:
                buffer.readers.remove(entry)
                self._give(record, proc_id, stream, entry[0], answer)

    def _wait_waited(self, record: SandboxRecord, proc_id: str, answer: Answer) -> None:
        proc = record.procs.get(proc_id)
        waiters = record.waiters if proc_id == MAIN else proc.waiters if proc else []
        for entry in list(waiters):
            if entry[0] is answer:
                waiters.remove(entry)
                answer(record.end_reply() if proc_id == MAIN else _proc_reply(proc), [])  # type: ignore[arg-type]


def _answerer(host: Host, req: Request[Any]) -> Answer:
    def answer(reply: Message, payloads: list[Payload]) -> None:
        host.send_peer(req.peer, framing.encode(with_id(reply, req.id), payloads))
    return answer


def _proc_reply(proc: SandboxProc) -> SandboxWaitReply:
    return SandboxWaitReply(code=proc.code, status="running" if proc.code is None else "exited", reason=proc.reason)


def _check_cmd(cmd: list[str], allow_empty: bool) -> None:
    if not cmd and not allow_empty:
        raise refusal(ErrorName.INVALID, "exec needs a command: sb.exec('ls', '-l')")
    for arg in cmd:
        if "\0" in arg:
            raise refusal(ErrorName.INVALID, f"command argument {arg!r:.60} holds a NUL byte")
    if cmd and not cmd[0]:
        raise refusal(ErrorName.INVALID, "the command's program is an empty string: name a program, e.g. 'echo'")


def _check_pty(pty: PtySpec | None) -> None:
    if pty is None:
        return
    _check_size(pty.rows, pty.cols)
    if pty.term is not None and not re.fullmatch(r"[\w.+-]{1,64}", pty.term):
        raise refusal(ErrorName.INVALID, f"pty term={pty.term!r:.80} is not a terminal type (such as "
                      "'xterm-256color'): letters, digits, '.', '+', '-' or '_', at most 64")


def _check_size(rows: int, cols: int) -> None:
    for what, n in (("rows", rows), ("cols", cols)):
        if not 1 <= n <= MAX_WINDOW:
            raise refusal(ErrorName.INVALID, f"a terminal's {what}={n!r} is out of range: 1 to {MAX_WINDOW}")


def _check_name(records: Iterable[SandboxRecord], app_id: str, name: str | None) -> None:
    """A new sandbox's name: well formed, and none of the app's running sandboxes has it."""
    if name is None:
        return
    if not re.match(NAME_PATTERN, name):
        raise refusal(ErrorName.INVALID, f"sandbox name {name!r}: use 1 to 64 letters, digits, '.', '-' or '_'")
    taken = next((r for r in records if r.app_id == app_id and r.name == name and not r.finished), None)
    if taken is not None:
        raise refusal(ErrorName.ALREADY_EXISTS, f"the app already runs a sandbox named {name!r} ({taken.id}): "
                      "terminate it, or choose another name")
