"""``remotecell shell FILE.py[::NAME] [--cmd CMD] [--pty/--no-pty]``: a shell in a container of a function's
image, as Modal's ``modal shell``.

The container is an ``rc.Sandbox`` of the file's app, made with the definition's own image and its options
that shape a container (``SANDBOX_OPTIONS``: GPU, CPU, memory, env, secrets, volumes, network), so it sees
what that function's containers see: the image's root and Python, its variables and working directory, the
volumes at their paths. Without ``--cmd`` it runs ``bash -i`` (``sh -i`` where the image has no bash); with
``--cmd`` one command through ``sh -c``. Its exit code is the command's.

When this process's stdin is a terminal (or with ``--pty``) the command runs on a pseudo-terminal there
(``Sandbox.create(pty=True)``) and this terminal is in raw mode while attached (``RawTerminal``, restored on
every way out): keys go as typed (Ctrl-C is a byte for the remote terminal, which interrupts the program in
its foreground; Ctrl-Z, arrows and full-screen programs work), the window size goes at the start and on each
SIGWINCH (``sandbox_resize``). Otherwise (``--no-pty``, or stdin a pipe or file) it runs on pipes: input is
forwarded as it is read, stdout and stderr kept apart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import termios
import threading
import tty
from typing import IO, Any, TextIO

from remotecell_runtime.protocol.messages.sandboxes import MAIN

from . import _bridge, _entry
from .app import App
from .cls import Cls
from .exceptions import Error, InvalidError
from .functions import Function
from .sandboxes import Sandbox, StreamReader, pty_spec, resize, start

# The wire options of a definition that shape its containers; the rest (retries, scaling, batching...) are
# about inputs, which a shell has none of.
SANDBOX_OPTIONS = ("gpu", "cpu", "memory", "env", "secrets", "volumes", "block_network")
INTERACTIVE = "command -v bash >/dev/null 2>&1 && exec bash -i || exec sh -i"


def definition_of(app: App, path: str, wanted: str | None) -> tuple[Any, dict[str, Any]]:
    """The image and wire options of the function or class ``wanted`` names (``Class.method`` names its class;
    without a name, the app's one definition)."""
    if wanted and wanted.partition(".")[0] not in app.functions and wanted.startswith("app."):
        wanted = wanted[len("app."):]  # Modal's FILE::app.NAME (the App's variable)
    if not wanted:
        if len(app.functions) != 1:
            raise InvalidError(f"{path} has {len(app.functions)} functions and classes "
                               f"({', '.join(sorted(app.functions)) or 'none'}): name one as {path}::NAME")
        wanted = next(iter(app.functions))
    found = app.functions.get(wanted.partition(".")[0] if wanted not in app.functions else wanted)
    if isinstance(found, Function):
        return found.registration.image, dict(found.registration.options)
    if isinstance(found, Cls):
        return found.image, dict(found.options)
    raise InvalidError(f"{path} has no function or class {wanted!r} (it has: {', '.join(sorted(app.functions))})")


def cmd_shell(target: str, command: str | None, timeout: int, module: bool = False, pty: bool | None = None) -> int:
    """Run the shell (or ``command``); its exit code. ``pty`` None: a pseudo-terminal when stdin is a terminal."""
    path, _, wanted = target.partition("::")
    app = _entry.find_app(_entry.load_module(path) if module else _entry.load_file(path), path)
    image, options = definition_of(app, path, wanted or None)
    given = {k: options[k] for k in SANDBOX_OPTIONS if k in options} | {"timeout": timeout}
    cmd = ["sh", "-c", command if command is not None else INTERACTIVE]
    on_pty = sys.stdin.isatty() if pty is None else pty
    with app.run():
        sandbox = _bridge.run(start(cmd, app, image, given, pty=pty_spec() if on_pty else None))
        if on_pty and sys.stdin.isatty():
            return _bridge.run(_attach_terminal(sandbox, sys.stdin.fileno()))
        return _bridge.run(_attach(sandbox, sys.stdin))


class RawTerminal:
    """This terminal in raw mode (keys as typed, no local echo, Ctrl-C no signal here) for as long as the
    ``with`` lasts; its earlier mode back on every way out (an exception, the remote end closing).

    >>> with RawTerminal(sys.stdin.fileno()):
    ...     os.read(0, 1)  # one key, as typed
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def __enter__(self) -> RawTerminal:
        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSADRAIN)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


async def _attach_terminal(sandbox: Sandbox, fd: int) -> int:
    """This terminal attached to the sandbox's pseudo-terminal until its command ends; its exit code."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    # A terminal has one output stream; stderr still brings what the runtime says of a sandbox that failed
    copies = [asyncio.create_task(_copy(StreamReader(sandbox.object_id, MAIN, stream, text=False), out))
              for stream, out in (("stdout", sys.stdout), ("stderr", sys.stderr))]
    typing = asyncio.create_task(_type(sandbox, keys))
    resizes: set[asyncio.Task[None]] = set()

    def on_winch() -> None:  # the window changed here: tell the remote terminal (its programs get SIGWINCH)
        size = os.get_terminal_size(fd)
        task = loop.create_task(resize(sandbox.object_id, MAIN, size.lines, size.columns))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    with RawTerminal(fd):
        loop.add_reader(fd, _read_keys, fd, keys)
        winch = _on_signal(loop, signal.SIGWINCH, on_winch)
        try:
            await sandbox.wait.aio(raise_on_termination=False)
            await asyncio.gather(*copies)
        finally:
            loop.remove_reader(fd)
            if winch:
                loop.remove_signal_handler(signal.SIGWINCH)
            for task in (*copies, typing, *resizes):
                task.cancel()
    return sandbox.returncode if sandbox.returncode is not None else 1


def _read_keys(fd: int, keys: asyncio.Queue[bytes]) -> None:
    try:
        data = os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if data:
        keys.put_nowait(data)
    else:  # this terminal is gone: nothing more will be typed
        asyncio.get_running_loop().remove_reader(fd)


async def _type(sandbox: Sandbox, keys: asyncio.Queue[bytes]) -> None:
    """What is typed here, to the remote terminal (what queued meanwhile in one write)."""
    try:
        while True:
            data = await keys.get()
            while not keys.empty():
                data += keys.get_nowait()
            sandbox.stdin.write(data)
            await sandbox.stdin.drain.aio()
    except Error:  # the command ended first: what is typed now has no reader
        return


def _on_signal(loop: asyncio.AbstractEventLoop, sig: int, handler: Any) -> bool:
    """``handler`` on ``sig`` in this loop; False where the loop cannot take signals (not the main thread)."""
    try:
        loop.add_signal_handler(sig, handler)
    except (ValueError, RuntimeError, NotImplementedError):
        return False
    return True


async def _attach(sandbox: Sandbox, stdin: IO[str]) -> int:
    """Copy the sandbox's output here and this process's input there until its command ends; its exit code."""
    copies = [asyncio.create_task(_copy(StreamReader(sandbox.object_id, MAIN, stream, text=False), out))
              for stream, out in (("stdout", sys.stdout), ("stderr", sys.stderr))]
    feeding = asyncio.create_task(_feed(sandbox, stdin))
    try:
        await sandbox.wait.aio(raise_on_termination=False)
        await asyncio.gather(*copies)
    finally:
        feeding.cancel()
        for task in copies:
            task.cancel()
    return sandbox.returncode if sandbox.returncode is not None else 1


async def _copy(reader: StreamReader, out: TextIO) -> None:
    while (data := await reader._chunk()) is not None:
        out.buffer.write(data)
        out.flush()


async def _feed(sandbox: Sandbox, stdin: IO[str]) -> None:
    """This process's stdin to the command's, as it is read (a line at a time from a terminal); its end too."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def read() -> None:  # a daemon thread: a read blocked on the terminal must not keep the process alive
        fd = stdin.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            loop.call_soon_threadsafe(chunks.put_nowait, data)
            if not data:
                return

    threading.Thread(target=read, name="shell-stdin", daemon=True).start()
    try:
        while data := await chunks.get():
            sandbox.stdin.write(data)
            await sandbox.stdin.drain.aio()
        sandbox.stdin.write_eof()
        await sandbox.stdin.drain.aio()
    except Error:  # the command ended (or closed its input) first: what is left here has no reader
        return
