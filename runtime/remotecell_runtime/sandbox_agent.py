"""The sandbox agent: a ``Sandbox``'s main process, which runs the user's commands and relays their bytes.

``python -m remotecell_runtime.sandbox_agent --connect ADDR --id CID [--cancel-fd FD]`` is started by the
runtime inside the sandbox's bubblewrap (with the image's Python), as a function's container is.  It
connects back to the daemon (a DEALER named CID), says ``sb_hello``, and from then on starts what
``sb_exec`` asks (each process in its own process group, its stdin, stdout and stderr pipes here),
sends what they write as ``sb_out`` (raw bytes, never decoded), their exits as ``sb_exit``, writes
``sb_in`` bytes into their stdin (``sb_wrote`` once they are in the pipe), and kills on ``sb_kill``.
A process asked for with ``pty`` runs on a pseudo-terminal (``os.openpty``) that is its controlling
terminal, stdin, stdout and stderr: the master's bytes go as its ``stdout`` (its ``stderr`` ends at once),
``sb_in`` is typed into the master (its end as the terminal's EOF character, ^D), and ``sb_resize`` sets
the window size (``TIOCSWINSZ``: the kernel sends the foreground job SIGWINCH). Ctrl-C is a byte like
any other: the terminal's line discipline turns it into SIGINT for the foreground job.

Invariants: no stream sends more than its credit (``WINDOW_BYTES`` at first, more with each
``sb_credit``, which the daemon gives back as it stores what came, until too much waits unread there):
past it the agent stops reading the pipe, so the process blocks in its write, as on a full pipe, and
nothing is lost.  When the main process (``main``) exits, or on
``sb_stop``, every other process group is killed, whatever the pipes still hold is sent (credit no longer
counts; at most ``DRAIN_S``), every exit is reported, and the agent exits: the sandbox is over.  The user's
processes get the agent's environment without the runtime's own variables (``REMOTECELL_*``), and the
kernel's OOM killer takes them before the agent (``oom_score_adj`` 1000).  The daemon's death (the cancel
pipe's hang-up, or ``PR_SET_PDEATHSIG``) ends the agent, and bwrap's pid namespace takes the rest.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from .protocol import framing
from .protocol.framing import Payload
from .protocol.message import Message, encode
from .protocol.messages.sandboxes import (
    MAIN,
    WINDOW_BYTES,
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
)

READ_BYTES = 1 << 20  # one read of a pipe, at most
PIPE_BYTES = 1 << 20  # a process's stdout and stderr pipes are made this large (Linux's default pipe-max-size)
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.10 on some builds
DRAIN_S = 5.0  # after the sandbox ends, how long what the pipes still hold may take to arrive
POLL_MS = 1000
OWN_VARIABLES = "REMOTECELL_"  # the runtime's variables: the agent's, never the user's processes'
DECODERS = {t.TYPE: t for t in (AgentExecMsg, AgentInMsg, AgentCreditMsg, AgentKillMsg, AgentStopMsg,
                                 AgentResizeMsg)}
PTY_EOF = b"\x04"  # what closing a terminal's input means: its EOF character (^D), as a user types it


@dataclass
class Outlet:
    """One stream of one process: its pipe, and how much the daemon may still be sent of it."""

    name: str
    file: Any  # the pipe's file object (closing it closes the fd, once)
    fd: int | None
    credit: int = WINDOW_BYTES

    def close(self) -> None:
        self.file.close()
        self.fd = None


@dataclass
class AgentProc:
    """One process the agent started: its pipes and what waits to go into its stdin."""

    id: str
    popen: subprocess.Popen[bytes]
    outlets: list[Outlet]
    stdin_fd: int | None
    pending: deque[tuple[int, memoryview, bool]] = field(default_factory=deque)  # (seq, bytes left, eof)
    code: int | None = None
    reported: bool = False
    tty: int | None = None  # the pseudo-terminal's master (its stdout outlet's and stdin's fd), if it has one

    @property
    def done(self) -> bool:
        return self.code is not None and all(o.fd is None for o in self.outlets)


class Agent:
    """The agent's one loop: the daemon's socket, the processes' pipes, their exits."""

    def __init__(self, address: str, cid: str, lifeline: int | None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.identity = cid.encode()
        self.sock.linger = 5000  # what is queued at exit still goes out
        self.sock.connect(address)
        self.lifeline = lifeline
        self.procs: dict[str, AgentProc] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_VARIABLES)}
        self.env["REMOTECELL_TASK_ID"] = cid
        self.ending: float | None = None  # when the sandbox ended: the drain's deadline counts from there
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # SIGCHLD wakes the poll
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.end())

    def send(self, msg: Message, data: bytes | None = None) -> None:
        framing.send(self.sock, encode(msg, [Payload([data])] if data is not None else []))

    def serve(self) -> None:
        self.send(AgentHelloMsg(pid=os.getpid()))
        while True:
            self.reap()
            if self.ending is not None and (all(p.done for p in self.procs.values())
                                            or time.monotonic() > self.ending + DRAIN_S):
                break
            poller = zmq.Poller()
            poller.register(self.sock, zmq.POLLIN)
            poller.register(self.wake_r, zmq.POLLIN)
            if self.lifeline is not None:
                poller.register(self.lifeline, zmq.POLLERR)
            for fd, flags in self.wanted().items():
                poller.register(fd, flags)
            events = dict(poller.poll(POLL_MS if self.ending is None else 100))
            if self.lifeline is not None and events.get(self.lifeline, 0) & zmq.POLLERR:
                self.end()  # the daemon is gone
            if events.pop(self.wake_r, 0):
                _drain_pipe(self.wake_r)
            while int(self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
                self.on_message(framing.recv(self.sock))
            for proc in list(self.procs.values()):
                self.pump(proc, events)
        self.finish()

    def wanted(self) -> dict[int, int]:
        """The processes' fds to poll, and for what (a terminal's master is both an outlet and a stdin: one
        entry, since a second registration of an fd replaces the first's flags)."""
        flags: dict[int, int] = {}
        for proc in self.procs.values():
            for out in proc.outlets:
                if out.fd is not None and (out.credit > 0 or self.ending is not None):
                    flags[out.fd] = flags.get(out.fd, 0) | zmq.POLLIN
            if proc.pending and proc.stdin_fd is not None:
                flags[proc.stdin_fd] = flags.get(proc.stdin_fd, 0) | zmq.POLLOUT
        return flags

    def on_message(self, frames: list[zmq.Frame]) -> None:
        header, payloads = framing.decode(frames)
        kind = DECODERS.get(header.get("t", ""))
        if kind is None:
            return
        msg = kind.from_wire(header)
        if isinstance(msg, AgentExecMsg):
            self.start(msg)
        elif isinstance(msg, AgentInMsg):
            data = b"".join(bytes(framing.buffer_of(f)) for p in payloads for f in p.frames)
            self.feed(msg, data)
        elif isinstance(msg, AgentCreditMsg):
            proc = self.procs.get(msg.proc)
            for out in proc.outlets if proc else ():
                if out.name == msg.stream:
                    out.credit += msg.n
        elif isinstance(msg, AgentResizeMsg):
            proc = self.procs.get(msg.proc)
            if proc is not None and proc.tty is not None:
                _set_size(proc.tty, msg.rows, msg.cols)
        elif isinstance(msg, AgentKillMsg):
            proc = self.procs.get(msg.proc)
            if proc is not None:
                _kill_group(proc, msg.signal)
        elif isinstance(msg, AgentStopMsg):
            self.end()

    def start(self, msg: AgentExecMsg) -> None:
        if self.ending is not None:  # asked for as the sandbox ended: nothing starts any more
            self.refuse(msg, "the sandbox has ended", 128 + signal.SIGKILL)
            return
        try:
            if msg.workdir:  # made if nothing is there, as an image's working directory is
                os.makedirs(msg.workdir, exist_ok=True)
        except OSError as exc:
            self.refuse(msg, f"its working directory {msg.workdir} cannot be made ({exc.strerror})", 126)
            return
        try:
            proc = self._spawn_on_pty(msg) if msg.pty is not None else self._spawn(msg)
        except subprocess.SubprocessError as exc:  # the terminal could not be made its own (preexec_fn)
            self.refuse(msg, f"its terminal could not be set up ({exc})", 126)
            return
        except OSError as exc:  # as a shell says it: the reason on stderr, 127 (126: found, not runnable)
            self.refuse(msg, exc.strerror or str(exc), 126 if isinstance(exc, PermissionError) else 127)
            return
        _first_to_go(proc.popen.pid)
        self.procs[msg.proc] = proc

    def _spawn(self, msg: AgentExecMsg) -> AgentProc:
        """``msg.cmd`` with its stdin, stdout and stderr pipes here (non-blocking, widened)."""
        popen = subprocess.Popen(msg.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=msg.workdir or None, env={**self.env, **msg.env}, start_new_session=True,
                                 bufsize=0)
        assert popen.stdout is not None and popen.stderr is not None and popen.stdin is not None
        outlets = [Outlet("stdout", popen.stdout, popen.stdout.fileno()),
                   Outlet("stderr", popen.stderr, popen.stderr.fileno())]
        for out in outlets:
            os.set_blocking(out.fd, False)  # type: ignore[arg-type]
            _widen(out.fd)  # type: ignore[arg-type]
        os.set_blocking(popen.stdin.fileno(), False)
        return AgentProc(msg.proc, popen, outlets, popen.stdin.fileno())

    def _spawn_on_pty(self, msg: AgentExecMsg) -> AgentProc:
        """``msg.cmd`` in a session of its own whose controlling terminal is a new pseudo-terminal."""
        assert msg.pty is not None
        master, slave = os.openpty()
        try:
            _set_size(slave, msg.pty.rows, msg.pty.cols)
            env = {**self.env, **({"TERM": msg.pty.term} if msg.pty.term else {}), **msg.env}
            env.setdefault("TERM", "xterm-256color")
            # setsid (start_new_session) runs before preexec_fn: the terminal becomes the new session's own
            popen = subprocess.Popen(msg.cmd, stdin=slave, stdout=slave, stderr=slave, cwd=msg.workdir or None,
                                     env=env, start_new_session=True, preexec_fn=_take_terminal)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the child's copies only: the master reads its end once they are all closed
        os.set_blocking(master, False)
        stderr = os.open(os.devnull, os.O_RDONLY)  # a terminal has one output stream: stderr ends at once
        outlets = [Outlet("stdout", os.fdopen(master, "rb", buffering=0, closefd=True), master),
                   Outlet("stderr", os.fdopen(stderr, "rb", buffering=0), stderr)]
        return AgentProc(msg.proc, popen, outlets, master, tty=master)

    def refuse(self, msg: AgentExecMsg, why: str, code: int) -> None:
        """A process that could not start: the reason on its stderr, ``code`` as its exit."""
        said = f"remotecell: cannot run {msg.cmd[0]!r}: {why}\n".encode()
        self.send(AgentOutMsg(proc=msg.proc, stream="stdout", eof=True), b"")
        self.send(AgentOutMsg(proc=msg.proc, stream="stderr", eof=True), said)
        self.send(AgentExitMsg(proc=msg.proc, code=code))
        if msg.proc == MAIN:
            self.end()

    def feed(self, msg: AgentInMsg, data: bytes) -> None:
        proc = self.procs.get(msg.proc)
        if proc is None or proc.stdin_fd is None:
            self.send(AgentWroteMsg(proc=msg.proc, seq=msg.seq))  # nobody reads it any more
            return
        proc.pending.append((msg.seq, memoryview(data), msg.eof))
        self.write_stdin(proc)

    def write_stdin(self, proc: AgentProc) -> None:
        while proc.pending and proc.stdin_fd is not None:
            seq, left, eof = proc.pending[0]
            try:
                n = os.write(proc.stdin_fd, left) if len(left) else 0
            except BlockingIOError:
                return
            except OSError:  # it closed its stdin, or exited: what is left goes nowhere
                self.close_stdin(proc)
                return
            if n < len(left):
                proc.pending[0] = (seq, left[n:], eof)
                continue
            proc.pending.popleft()
            if eof:
                self.close_stdin(proc)
            self.send(AgentWroteMsg(proc=proc.id, seq=seq))

    def close_stdin(self, proc: AgentProc) -> None:
        if proc.tty is not None:  # the master is also its output: the end of input is typed (^D), not closed
            if proc.stdin_fd is not None and proc.outlets[0].fd is not None:
                try:
                    os.write(proc.tty, PTY_EOF)
                except OSError:
                    pass
        elif proc.popen.stdin is not None:
            try:
                proc.popen.stdin.close()
            except OSError:
                pass
        proc.stdin_fd = None
        if proc.pending:
            self.send(AgentWroteMsg(proc=proc.id, seq=proc.pending[-1][0]))
            proc.pending.clear()

    def pump(self, proc: AgentProc, events: dict[int, int]) -> None:
        for out in proc.outlets:
            if out.fd is not None and events.get(out.fd, 0) & (zmq.POLLIN | zmq.POLLERR):
                self.read_outlet(proc, out)
        if proc.stdin_fd is not None and events.get(proc.stdin_fd, 0) & zmq.POLLOUT:
            self.write_stdin(proc)

    def read_outlet(self, proc: AgentProc, out: Outlet) -> None:
        assert out.fd is not None
        limit = READ_BYTES if self.ending is not None else max(1, min(READ_BYTES, out.credit))
        try:
            data = os.read(out.fd, limit)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            out.credit -= len(data)
            self.send(AgentOutMsg(proc=proc.id, stream=out.name), data)
            return
        if out.fd == proc.tty:  # the terminal is gone (EIO): nothing is written into it any more either
            proc.tty = proc.stdin_fd = None
            proc.pending.clear()
        out.close()
        self.send(AgentOutMsg(proc=proc.id, stream=out.name, eof=True), b"")
        self.report(proc)

    def reap(self) -> None:
        for proc in self.procs.values():
            if proc.code is None:
                code = proc.popen.poll()
                if code is not None:
                    proc.code = 128 - code if code < 0 else code
                    if proc.id == MAIN:
                        self.end()
            self.report(proc)

    def report(self, proc: AgentProc) -> None:
        """Its exit, once its output is all sent (a reader that sees the exit has the whole output coming)."""
        if proc.done and not proc.reported:
            proc.reported = True
            self.send(AgentExitMsg(proc=proc.id, code=proc.code or 0))

    def end(self) -> None:
        """The sandbox is over: kill every process group, then drain what they left."""
        if self.ending is None:
            self.ending = time.monotonic()
        for proc in self.procs.values():
            _kill_group(proc, signal.SIGKILL)

    def finish(self) -> None:
        for proc in self.procs.values():
            if proc.code is None:
                proc.code = 128 + signal.SIGKILL
            for out in proc.outlets:
                if out.fd is not None:
                    out.close()
                    self.send(AgentOutMsg(proc=proc.id, stream=out.name, eof=True), b"")
            self.report(proc)
        self.sock.close()  # linger: the last messages still go out
        self.ctx.term()


def _kill_group(proc: AgentProc, sig: int) -> None:
    try:
        os.killpg(proc.popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _take_terminal() -> None:
    """In the child, after setsid: its stdin (the pseudo-terminal) becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_size(fd: int, rows: int, cols: int) -> None:
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError:  # the terminal is gone
        pass


def _first_to_go(pid: int) -> None:
    """The kernel's OOM killer takes this process before the agent (a user may always raise the score)."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def _widen(fd: int) -> None:
    """A pipe of ``PIPE_BYTES`` rather than 64 KiB: a fast writer's bytes come in a sixteenth of the messages."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # over this host's pipe-max-size: the default stays
        pass


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _die_with_parent() -> None:
    try:  # Linux: the kernel kills us if the daemon dies
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        options = dict(zip(args[::2], args[1::2], strict=True))
        address, cid = options["--connect"], options["--id"]
        lifeline = int(options["--cancel-fd"]) if "--cancel-fd" in options else None
    except (KeyError, ValueError):
        sys.exit("usage: python -m remotecell_runtime.sandbox_agent --connect ADDR --id ID [--cancel-fd FD] "
                 "(started by the runtime)")
    _die_with_parent()
    mounts = os.environ.get("REMOTECELL_VOLUMES")
    if mounts:  # no bubblewrap here: its volumes are links, as a function's container makes them
        from .container.loading import _link_volumes

        _link_volumes(mounts)
    Agent(address, cid, lifeline).serve()


if __name__ == "__main__":
    main()
