"""Sandboxes (Modal's ``Sandbox``): a container that runs the user's command, and processes exec'd in it.

Client -> daemon: ``sandbox_create`` (answered with the new id once the request is checked; the
container starts in the background), ``sandbox_exec``, ``sandbox_read`` (bytes of one stream of one
process, waiting up to ``wait_s`` for some; raw payload, never pickled), ``sandbox_write`` (stdin bytes,
answered once the agent wrote them into the process's pipe), ``sandbox_wait`` (a process's exit,
waiting up to ``wait_s``), ``sandbox_resize`` (a pseudo-terminal's window size), ``sandbox_terminate``,
``sandbox_get`` (``Sandbox.from_id``) and ``sandbox_list``.

Daemon <-> agent (the sandbox's main process, ``remotecell_runtime.sandbox_agent``, on a socket of that
sandbox's own): the agent says
``sb_hello``, is told ``sb_exec`` for each process (the sandbox's command is process ``main``), and
relays ``sb_out`` (a process's bytes, a stream's end) and ``sb_exit``; it takes ``sb_in`` (stdin bytes,
acknowledged with ``sb_wrote``), ``sb_credit`` (bytes of a stream the reader took: what it may send
more), ``sb_resize`` (a pseudo-terminal's new size), ``sb_kill`` (a signal to one process) and ``sb_stop`` (end
everything, then itself).

A process started with ``pty`` (``PtySpec``: Modal's ``pty=True``) runs on a pseudo-terminal: its stdin,
stdout and stderr are the terminal, so all it writes comes as ``stdout`` and its ``stderr`` is empty.

A process is named by its sandbox and its ``proc`` id (``main`` for the command the sandbox runs).
"""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire

MAIN = "main"  # the process of the sandbox's own command
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # a sandbox's name, as Modal allows them
STREAMS = ("stdout", "stderr")
READ_MAX_BYTES = 8 << 20  # at most this much in one sandbox_read reply
WAIT_MAX_S = 50.0  # a sandbox_read or sandbox_wait waits at most this long, then answers anyway
WINDOW_BYTES = 8 << 20  # bytes of one stream the agent may send before the daemon gives credit back
MAX_WINDOW = 65535  # a terminal's rows or columns, at most (struct winsize holds unsigned shorts)


@message()
class PtySpec(Message):
    """A pseudo-terminal for a process: its window size (``rows`` x ``cols``) and ``TERM`` (None: the agent's)."""

    rows: int = 24
    cols: int = 80
    term: str | None = None


# -- client <-> daemon -------------------------------------------------------------------------


@message("sandbox_create")
class SandboxCreateMsg(Message):
    """A sandbox of app ``app_id`` running ``cmd`` (empty: it idles until it is terminated or times out);
    ``options``: what a function's options say of its containers (``FunctionOptions``: image, volumes,
    secrets, gpu, cpu, memory, block_network, timeout_s); ``workdir``: the command's working directory."""

    app_id: str
    cmd: list[str] = wire(factory=list)
    options: dict[str, Any] = wire(factory=dict)
    workdir: str | None = None
    name: str | None = None  # unique among the app's running sandboxes (``Sandbox.from_name``)
    pty: PtySpec | None = None  # its command on a pseudo-terminal


@message("reply")
class SandboxCreateReply(Message):
    sandbox: str


@message("sandbox_exec")
class SandboxExecMsg(Message):
    """Run ``cmd`` in the sandbox; ``timeout_s``: killed after that long (None: lives as long as the sandbox);
    ``options``: variables it gets beyond the sandbox's (``env``, ``secrets``)."""

    sandbox: str
    cmd: list[str]
    workdir: str | None = None
    timeout_s: float | None = None
    options: dict[str, Any] = wire(factory=dict)  # its own ``env`` and ``secrets``, as a function's options say them
    pty: PtySpec | None = None  # on a pseudo-terminal


@message("reply")
class SandboxExecReply(Message):
    proc: str


@message("sandbox_read")
class SandboxReadMsg(Message):
    """Up to ``n`` bytes of ``stream`` (stdout, stderr) of process ``proc``, waiting up to ``wait_s`` for some;
    ``offset``: where in the stream the reader is (the bytes before it are acknowledged and dropped; None: a
    new reader, from the oldest kept). Bytes sent and not acknowledged are sent again: a read whose answer was
    lost (Ctrl-C) loses nothing."""

    sandbox: str
    proc: str = MAIN
    stream: str = "stdout"
    n: int = READ_MAX_BYTES
    wait_s: float = 0.0
    offset: int | None = None


@message("reply")
class SandboxReadReply(Message):
    """The bytes are the one payload (raw), from ``offset`` in the stream; ``eof``: nothing comes after them."""

    eof: bool = False
    offset: int = 0


@message("sandbox_write")
class SandboxWriteMsg(Message):
    """Bytes (the one payload, raw) for process ``proc``'s stdin; ``eof``: close it after them."""

    sandbox: str
    proc: str = MAIN
    eof: bool = False


@message("sandbox_wait")
class SandboxWaitMsg(Message):
    """Process ``proc``'s exit, waiting up to ``wait_s`` (0: just ask)."""

    sandbox: str
    proc: str = MAIN
    wait_s: float = 0.0


@message("reply")
class SandboxWaitReply(Message):
    """``code``: the exit code (None while it runs); ``status``: running, exited, timeout, terminated or
    failed (the sandbox's; a process's is running or exited); ``reason``: how it ended, in words."""

    code: int | None = None
    status: str = "running"
    reason: str | None = None


@message("sandbox_resize")
class SandboxResizeMsg(Message):
    """Process ``proc``'s pseudo-terminal is now ``rows`` x ``cols`` (its programs get SIGWINCH)."""

    sandbox: str
    proc: str = MAIN
    rows: int
    cols: int


@message("sandbox_terminate")
class SandboxTerminateMsg(Message):
    sandbox: str


@message("sandbox_get")
class SandboxGetMsg(Message):
    """One sandbox by its id, or the running one named ``name`` of an app named ``app``."""

    sandbox: str | None = None
    app: str | None = None
    name: str | None = None


@message()
class SandboxInfo(Message):
    """One sandbox as ``sandbox_get`` and ``sandbox_list`` (and ``status``) tell it."""

    id: str
    app_id: str
    status: str  # starting, running, exited, timeout, terminated, failed
    name: str | None = None
    cmd: list[str] = wire(factory=list)
    created_at: float = 0.0  # epoch s
    code: int | None = None
    reason: str | None = None  # why it waits to start, or how it ended
    container: str | None = None  # its container's id, once it has one


@message("reply")
class SandboxGetReply(Message):
    info: SandboxInfo


@message("sandbox_list")
class SandboxListMsg(Message):
    """The sandboxes that have not finished (of app ``app_id``, or all)."""

    app_id: str | None = None


@message("reply")
class SandboxListReply(Message):
    sandboxes: list[SandboxInfo] = wire(factory=list)


# -- daemon <-> agent ---------------------------------------------------------------------------


@message("sb_hello")
class AgentHelloMsg(Message):
    """The agent is up (its pid inside the sandbox)."""

    pid: int


@message("sb_exec")
class AgentExecMsg(Message):
    """Start process ``proc``: ``cmd`` in ``workdir`` with ``env`` added to the sandbox's variables."""

    proc: str
    cmd: list[str]
    workdir: str | None = None
    env: dict[str, str] = wire(factory=dict)
    pty: PtySpec | None = None  # on a pseudo-terminal of this size


@message("sb_out")
class AgentOutMsg(Message):
    """Bytes of a process's ``stream`` (the one payload, raw; may be empty); ``eof``: the stream ended."""

    proc: str
    stream: str
    eof: bool = False


@message("sb_exit")
class AgentExitMsg(Message):
    """Process ``proc`` ended: ``code`` as a shell says it (128 + N for signal N)."""

    proc: str
    code: int


@message("sb_in")
class AgentInMsg(Message):
    """Bytes (the one payload) for ``proc``'s stdin, number ``seq``; ``eof``: close it after them."""

    proc: str
    seq: int
    eof: bool = False


@message("sb_wrote")
class AgentWroteMsg(Message):
    """Every stdin chunk of ``proc`` up to ``seq`` is in its pipe (or the process stopped reading)."""

    proc: str
    seq: int


@message("sb_credit")
class AgentCreditMsg(Message):
    """The reader took ``n`` more bytes of ``proc``'s ``stream``: the agent may send that much more."""

    proc: str
    stream: str
    n: int


@message("sb_resize")
class AgentResizeMsg(Message):
    """Process ``proc``'s pseudo-terminal is now ``rows`` x ``cols``."""

    proc: str
    rows: int
    cols: int


@message("sb_kill")
class AgentKillMsg(Message):
    """Send ``signal`` to process ``proc`` (its whole process group)."""

    proc: str
    signal: int = 9


@message("sb_stop")
class AgentStopMsg(Message):
    """End every process, send what they wrote, then exit."""
