"""``rc.Sandbox`` (Modal's ``Sandbox``): a container of an app's image running your command, and ``exec`` in it.

>>> sb = rc.Sandbox.create("python", "-c", "print(input()[::-1])", app=app, timeout=60)
>>> sb.stdin.write("hello\\n"); sb.stdin.write_eof(); sb.stdin.drain()
>>> sb.stdout.read()                   # 'olleh\\n'
>>> sb.wait(); sb.returncode           # None, then 0
>>> p = sb.exec("ls", "/")             # a ContainerProcess: stdout, stderr, stdin, wait(), poll()
>>> for line in p.stdout: print(line, end="")
>>> t = sb.exec("bash", "-i", pty=True)  # on a pseudo-terminal: `tty` works, stderr comes as stdout

Every blocking method has its ``.aio`` twin (``await rc.Sandbox.create.aio(...)``,
``await sb.stdout.read.aio()``, ``async for line in p.stdout``).  Bytes travel raw
(never pickled): the runtime keeps what a process wrote until it is read, and a
process whose reader is slow waits in its write, as on a pipe.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.message import Message
from remotecell_runtime.protocol.messages.sandboxes import (
    MAIN,
    NAME_PATTERN,
    READ_MAX_BYTES,
    WAIT_MAX_S,
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

from . import _bridge, _client
from ._bridge import TwinMethod, twin, twin_iterator
from .exceptions import InvalidError, SandboxTerminatedError, SandboxTimeoutError
from .options import check_function_options

FINISHED = ("exited", "timeout", "terminated", "failed")


async def _ask(msg: Message, payloads: Sequence[Payload] = ()) -> tuple[dict[str, Any], list[Payload]]:
    conn = _client.connection()
    return await conn.async_channel().roundtrip(conn.envelope(msg), list(payloads))


def _raw(payloads: list[Payload]) -> bytes:
    return b"".join(bytes(framing.buffer_of(f)) for p in payloads for f in p.frames)


class StreamReader:
    """A process's stdout or stderr: ``read()`` all of it, or iterate its lines as they come (str, or bytes
    for ``text=False``)."""

    def __init__(self, sandbox_id: str, proc: str, stream: str, text: bool = True) -> None:
        self._sandbox_id = sandbox_id
        self._proc = proc
        self._stream = stream
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._eof = False
        self._offset: int | None = None  # where in the stream this reader is (None: nothing read yet)

    @property
    def file_descriptor(self) -> int:
        """1 for stdout, 2 for stderr (Modal's numbering)."""
        return 1 if self._stream == "stdout" else 2

    async def _chunk(self) -> bytes | None:
        """The next bytes the process wrote (waiting for some), or None at the end.

        Each read tells the runtime how far this reader is (``offset``): it drops what the reader has, and sends
        again what it sent before and never heard acknowledged (a read interrupted by Ctrl-C loses nothing)."""
        while not self._eof:
            reply, payloads = await self._ask_from(WAIT_MAX_S)
            answer = SandboxReadReply.from_wire(reply)
            data = _raw(payloads)
            self._offset = answer.offset + len(data)
            if answer.eof:
                self._eof = True
                await self._ask_from(0.0)  # acknowledge the last bytes: nothing is kept for a later reader
            if data:
                return data
        return None

    async def _ask_from(self, wait_s: float) -> tuple[dict[str, Any], list[Payload]]:
        return await _ask(SandboxReadMsg(sandbox=self._sandbox_id, proc=self._proc, stream=self._stream,
                                         n=READ_MAX_BYTES, wait_s=wait_s, offset=self._offset))

    def _out(self, data: bytes, final: bool = False) -> Any:
        return self._decoder.decode(data, final) if self._text else data

    async def _read(self) -> Any:
        """Everything the process writes to this stream, once it has closed it (its exit)."""
        parts = []
        while (data := await self._chunk()) is not None:
            parts.append(data)
        return self._out(b"".join(parts), final=True)

    read = TwinMethod(_read)

    async def _lines(self) -> AsyncIterator[Any]:
        newline = "\n" if self._text else b"\n"
        left = newline[:0]
        while (data := await self._chunk()) is not None:
            left += self._out(data)
            *lines, left = left.split(newline)
            for line in lines:
                yield line + newline
        left += self._out(b"", final=True)
        if left:
            yield left

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._lines()

    def __iter__(self) -> Iterator[Any]:
        return _bridge.iterate(self._lines())


class StreamWriter:
    """A process's stdin: ``write`` buffers here, ``drain()`` sends what was written (and waits until it is in the
    process's pipe), ``write_eof()`` closes it after that."""

    def __init__(self, sandbox_id: str, proc: str) -> None:
        self._sandbox_id = sandbox_id
        self._proc = proc
        self._buffer = bytearray()
        self._eof = False
        self._eof_sent = False

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        """Add ``data`` (str as UTF-8) to what the next ``drain()`` sends."""
        if self._eof:
            raise InvalidError("stdin is closed (write_eof() was called): nothing more can be written to it")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidError(f"stdin.write({data!r:.60}) takes bytes or str, not {type(data).__name__}")
        self._buffer += data

    def write_eof(self) -> None:
        """Close stdin once what was written is sent (at the next ``drain()``): the process reads its end."""
        self._eof = True

    async def _drain(self) -> None:
        """Send what was written (and the end, after ``write_eof()``); returns once it is in the process's pipe."""
        while self._buffer or (self._eof and not self._eof_sent):
            chunk = bytes(self._buffer[:READ_MAX_BYTES])
            del self._buffer[:len(chunk)]
            last = self._eof and not self._buffer
            await _ask(SandboxWriteMsg(sandbox=self._sandbox_id, proc=self._proc, eof=last), [Payload([chunk])])
            self._eof_sent = last

    drain = TwinMethod(_drain)


class ContainerProcess:
    """A process started by ``Sandbox.exec``: its streams, ``wait()``, ``poll()`` and ``returncode``."""

    def __init__(self, sandbox_id: str, proc: str, text: bool = True) -> None:
        self._sandbox_id = sandbox_id
        self._proc = proc
        self._returncode: int | None = None
        self.stdout = StreamReader(sandbox_id, proc, "stdout", text)
        self.stderr = StreamReader(sandbox_id, proc, "stderr", text)
        self.stdin = StreamWriter(sandbox_id, proc)

    @property
    def returncode(self) -> int:
        """Its exit code (128 + N when signal N killed it, 124 past its exec timeout); ``wait()`` first."""
        if self._returncode is None:
            raise InvalidError("the process has not been waited for: call wait() before reading returncode, or "
                               "poll() to ask without waiting")
        return self._returncode

    async def _ask_exit(self, wait_s: float) -> int | None:
        reply, _ = await _ask(SandboxWaitMsg(sandbox=self._sandbox_id, proc=self._proc, wait_s=wait_s))
        self._returncode = SandboxWaitReply.from_wire(reply).code
        return self._returncode

    async def _poll(self) -> int | None:
        """Its exit code if it has exited, else None (does not wait)."""
        return await self._ask_exit(0.0)

    poll = TwinMethod(_poll)

    async def _wait(self) -> int:
        """Wait for it to exit; its exit code."""
        while (code := await self._ask_exit(WAIT_MAX_S)) is None:
            pass
        return code

    wait = TwinMethod(_wait)

    def __repr__(self) -> str:
        return f"<rc.ContainerProcess {self._proc} of {self._sandbox_id}>"


def pty_spec(fd: int | None = None) -> PtySpec:
    """A pseudo-terminal the size of this process's terminal (stdin's, else stdout's; 24x80 without one) and
    its ``TERM``, as Modal's ``pty=True`` makes one."""
    size = None
    for candidate in (fd,) if fd is not None else (0, 1):
        try:
            size = os.get_terminal_size(candidate)
            break
        except OSError:
            continue
    size = size or shutil.get_terminal_size((80, 24))
    return PtySpec(rows=max(1, size.lines), cols=max(1, size.columns), term=os.environ.get("TERM") or None)


async def resize(sandbox_id: str, proc: str, rows: int, cols: int) -> None:
    """Tell process ``proc``'s pseudo-terminal that its window is now ``rows`` x ``cols`` (``remotecell shell``
    on SIGWINCH)."""
    await _ask(SandboxResizeMsg(sandbox=sandbox_id, proc=proc, rows=rows, cols=cols))


async def _create(*args: str, app: Any = None, image: Any = None, timeout: int = 300, workdir: str | None = None,
                  volumes: dict[str, Any] | None = None, secrets: Sequence[Any] = (), cpu: Any = None,
                  memory: Any = None, gpu: Any = None, block_network: bool = False,
                  env: dict[str, str] | None = None, name: str | None = None, pty: bool = False) -> Sandbox:
    """Start a sandbox running ``args`` (none: it idles until terminated or timed out) in ``app``'s image (or
    ``image``), with its ``volumes``, ``secrets``, ``cpu``, ``memory``, ``gpu``; ended after ``timeout`` s;
    ``name``: unique among the app's running sandboxes (``Sandbox.from_name``); ``pty=True``: its command on a
    pseudo-terminal (of this terminal's size), so all its output comes on ``stdout`` and ``stderr`` is empty."""
    from .app import App
    from .images import check_image

    cmd = _checked_cmd(args, "Sandbox.create")
    if not isinstance(app, App):
        raise InvalidError(f"Sandbox.create needs app=, an rc.App (got {app!r}): the sandbox lives as long as its "
                           "app, e.g. rc.Sandbox.create('echo', 'hi', app=rc.App('sandboxes'))")
    given: dict[str, Any] = {"timeout": timeout, "block_network": block_network}
    for option, value in (("cpu", cpu), ("memory", memory), ("gpu", gpu), ("env", env), ("volumes", volumes),
                          ("secrets", secrets)):
        if value:
            given[option] = value
    options = {k: v for k, v in check_function_options(given).items() if k != "not_in_effect"}
    if name is not None and (not isinstance(name, str) or not re.match(NAME_PATTERN, name)):
        raise InvalidError(f"name={name!r}: a sandbox's name is 1 to 64 letters, digits, '.', '-' or '_'")
    chosen = check_image(image) if image is not None else app.image
    return await start(cmd, app, chosen, options, _checked_workdir(workdir), name,
                       pty_spec() if _checked_pty(pty) else None)


async def start(cmd: list[str], app: Any, image: Any, options: dict[str, Any], workdir: str | None = None,
                name: str | None = None, pty: PtySpec | None = None) -> Sandbox:
    """A sandbox of ``app`` with checked wire ``options`` (a function's own, for ``remotecell shell``) in ``image``
    (published first; None: the runtime's own)."""
    conn, app_id = await asyncio.to_thread(app.ensure_running)
    options = dict(options)
    if image is not None:
        spec = await asyncio.to_thread(image.publish, conn, app_id)
        if spec is not None:
            options["image"] = spec
    msg = SandboxCreateMsg(app_id=app_id, cmd=cmd, options=options, workdir=workdir, name=name, pty=pty)
    reply, _ = await _ask(msg)
    return Sandbox(SandboxCreateReply.from_wire(reply).sandbox)


async def _from_id(sandbox_id: str) -> Sandbox:
    """The sandbox ``sandbox_id`` (``sb.object_id``), from any process; NotFoundError if the runtime has none."""
    if not isinstance(sandbox_id, str) or not sandbox_id.startswith("sb-"):
        raise InvalidError(f"Sandbox.from_id({sandbox_id!r}): a sandbox id looks like 'sb-0123abcd...' "
                           "(sb.object_id)")
    reply, _ = await _ask(SandboxGetMsg(sandbox=sandbox_id))
    return Sandbox(sandbox_id, SandboxGetReply.from_wire(reply).info)


async def _from_name(app_name: str, name: str) -> Sandbox:
    """The running sandbox ``name`` (``Sandbox.create(..., name=)``) of the app named ``app_name``; NotFoundError
    if there is none."""
    if not isinstance(app_name, str) or not isinstance(name, str):
        raise InvalidError(f"Sandbox.from_name({app_name!r}, {name!r}) takes an app's name and a sandbox's name")
    reply, _ = await _ask(SandboxGetMsg(app=app_name, name=name))
    info = SandboxGetReply.from_wire(reply).info
    return Sandbox(info.id, info)


async def _list(app_id: str | None = None) -> AsyncIterator[Sandbox]:
    """The sandboxes that have not finished (of app ``app_id``, or all)."""
    reply, _ = await _ask(SandboxListMsg(app_id=app_id))
    for info in SandboxListReply.from_wire(reply).sandboxes:
        yield Sandbox(info.id, info)



class Sandbox:
    """A container running your command (Modal's ``Sandbox``); made by ``Sandbox.create``.

    ``stdout``, ``stderr`` and ``stdin`` are its command's; ``exec`` runs more commands in it. It ends when
    its command exits, at its ``timeout`` (300 s by default), on ``terminate()``, or when its app stops.
    """

    def __init__(self, object_id: str, info: SandboxInfo | None = None) -> None:
        self.object_id = object_id
        self._info = info
        self._result: SandboxWaitReply | None = None
        self.stdout = StreamReader(object_id, MAIN, "stdout")
        self.stderr = StreamReader(object_id, MAIN, "stderr")
        self.stdin = StreamWriter(object_id, MAIN)

    @property
    def returncode(self) -> int | None:
        """Its command's exit code once ``wait()`` or ``poll()`` saw it end (124: timed out; 137: terminated),
        else None."""
        return self._result.code if self._result is not None else None

    async def _ask_end(self, wait_s: float) -> SandboxWaitReply:
        reply, _ = await _ask(SandboxWaitMsg(sandbox=self.object_id, proc=MAIN, wait_s=wait_s))
        result = SandboxWaitReply.from_wire(reply)
        if result.status in FINISHED:
            self._result = result
        return result

    async def _wait(self, raise_on_termination: bool = True) -> None:
        """Wait for it to end; ``SandboxTimeoutError`` if it ran past its timeout, ``SandboxTerminatedError`` if
        it was terminated (unless ``raise_on_termination=False``)."""
        while (result := await self._ask_end(WAIT_MAX_S)).status not in FINISHED:
            pass
        if result.status == "timeout":
            raise SandboxTimeoutError(f"sandbox {self.object_id} {result.reason}")
        if result.status == "terminated" and raise_on_termination:
            raise SandboxTerminatedError(f"sandbox {self.object_id} was {result.reason}")

    wait = TwinMethod(_wait)

    async def _poll(self) -> int | None:
        """Its return code if it has ended, else None (does not wait)."""
        await self._ask_end(0.0)
        return self.returncode

    poll = TwinMethod(_poll)

    async def _terminate(self) -> None:
        """End it now: its processes are killed (what they wrote stays readable)."""
        await _ask(SandboxTerminateMsg(sandbox=self.object_id))

    terminate = TwinMethod(_terminate)

    async def _exec(self, *args: str, workdir: str | None = None, timeout: int | None = None,
                    secrets: Sequence[Any] = (), env: dict[str, str] | None = None,
                    text: bool = True, pty: bool = False) -> ContainerProcess:
        """Run ``args`` in the sandbox (in ``workdir``, with ``secrets`` and ``env`` beyond the sandbox's own; killed
        after ``timeout`` s); its ``ContainerProcess`` (str streams, or bytes with ``text=False``); ``pty=True``: on
        a pseudo-terminal, all its output on ``stdout`` (Modal's)."""
        cmd = _checked_cmd(args, "exec")
        if not cmd:
            raise InvalidError("sb.exec() needs a command, e.g. sb.exec('ls', '-l')")
        given: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        given.update({k: v for k, v in (("secrets", secrets), ("env", env)) if v})
        checked = check_function_options(given)
        options: dict[str, Any] = {k: checked[k] for k in ("env", "secrets") if k in checked}
        msg = SandboxExecMsg(sandbox=self.object_id, cmd=cmd, workdir=_checked_workdir(workdir), options=options,
                             timeout_s=None if timeout is None else float(timeout),
                             pty=pty_spec() if _checked_pty(pty) else None)
        reply, _ = await _ask(msg)
        return ContainerProcess(self.object_id, SandboxExecReply.from_wire(reply).proc, text)

    exec = TwinMethod(_exec)

    async def _describe(self) -> SandboxInfo:
        """What the runtime says of it now (``status``, ``code``, ``reason``, ``container``, ...)."""
        reply, _ = await _ask(SandboxGetMsg(sandbox=self.object_id))
        self._info = SandboxGetReply.from_wire(reply).info
        return self._info

    describe = TwinMethod(_describe)

    def __repr__(self) -> str:
        return f"<rc.Sandbox {self.object_id}>"

    # ``rc.Sandbox.create(...)``, ``await rc.Sandbox.create.aio(...)``: twins on the class (last: ``list``
    # names the builtin no more in this body below it)
    create = twin(_create)
    from_id = twin(_from_id)
    from_name = twin(_from_name)
    list = twin_iterator(_list)


def _checked_cmd(args: Sequence[Any], where: str) -> list[str]:
    for arg in args:
        if not isinstance(arg, str):
            raise InvalidError(f"{where}: every part of the command must be a str, got {arg!r} "
                               f"({type(arg).__name__}); write it as {str(arg)!r}")
    if args and not args[0]:
        raise InvalidError(f"{where}: the command's program is an empty string; name a program, e.g. 'echo'")
    return list(args)


def _checked_pty(pty: Any) -> bool:
    if not isinstance(pty, bool):
        raise InvalidError(f"pty={pty!r} must be True or False (True: run it on a pseudo-terminal)")
    return pty


def _checked_workdir(workdir: Any) -> str | None:
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
        raise InvalidError(f"workdir={workdir!r} must be an absolute path, e.g. '/root' or '/tmp/work'")
    return workdir
