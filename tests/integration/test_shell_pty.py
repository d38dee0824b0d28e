"""``remotecell shell`` from a terminal: the command runs on a pseudo-terminal in the container, as ``modal shell``'s.

The test is the terminal: ``remotecell shell`` runs with a pseudo-terminal of the test's own as its controlling
terminal, stdin, stdout and stderr; the test types into its master, reads what comes back until a marker appears
(deadlines, no sleeps), resizes it, and checks its mode afterwards. The markers are computed by the remote shell
(``$((6*7))``), so the terminal's echo of what was typed never matches them.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator

import pytest

APP = '''
import remotecell as rc

app = rc.App("{name}")

@app.function()
def job():
    return "ran"
'''


class Terminal:
    """A pseudo-terminal the test holds: ``remotecell shell`` runs on its slave, the test reads and types on
    its master."""

    def __init__(self, rows: int, cols: int) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        """As a terminal window does: the kernel sends SIGWINCH to the foreground job of the terminal's session."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        def own_terminal() -> None:  # a session of its own, whose controlling terminal is the slave
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        return subprocess.Popen([sys.executable, "-m", "remotecell", *args], stdin=self.slave, stdout=self.slave,
                                stderr=self.slave, start_new_session=True, preexec_fn=own_terminal)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout_s: float = 60) -> re.Match[bytes]:
        """Read until ``pattern`` appears in what came after the last match; that match."""
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern.encode())
        while (found := regex.search(self.seen)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} did not appear within {timeout_s} s; the terminal showed:\n"
                                     f"{self.seen[-3000:].decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: nobody holds the slave any more
                    raise AssertionError(f"the terminal closed before {pattern!r}:\n"
                                         f"{self.seen[-3000:].decode(errors='replace')}") from None
        self.seen = self.seen[found.end():]
        return found

    def close(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


@pytest.fixture
def app_file(sandboxed, tmp_path):
    path = tmp_path / "pty_app.py"
    path.write_text(APP.format(name=f"shell-pty-{secrets.token_hex(3)}"))
    return path


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal(30, 100)
    yield term
    term.close()


def _ended(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("remotecell shell did not exit") from None


def test_the_shell_runs_on_a_terminal_of_this_terminal_s_size_and_follows_a_resize(app_file, terminal):
    before = termios.tcgetattr(terminal.slave)
    proc = terminal.start("shell", f"{app_file}::job")
    try:
        terminal.type("test -t 0 && test -t 1 && test -t 2 && echo TTY-$((6*7)) $(tty)\r")
        assert terminal.expect(r"TTY-42 (/dev/pts/\d+)").group(1).startswith(b"/dev/pts/")
        terminal.type("echo SIZE-$(stty size | tr ' ' x)\r")
        terminal.expect(r"SIZE-30x100")
        terminal.resize(40, 120)
        deadline = time.monotonic() + 30
        while True:  # the new size travels on its own: ask until the remote terminal has it
            terminal.type("echo SIZE-$(stty size | tr ' ' x)\r")
            size = terminal.expect(r"SIZE-(\d+x\d+)").group(1)
            if size == b"40x120":
                break
            assert size == b"30x100" and time.monotonic() < deadline, size
        terminal.type("exit 3\r")
        assert _ended(proc) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    assert termios.tcgetattr(terminal.slave) == before  # raw mode ended with it


def test_ctrl_c_interrupts_the_remote_program_and_the_shell_goes_on(app_file, terminal):
    before = termios.tcgetattr(terminal.slave)
    proc = terminal.start("shell", f"{app_file}::job")
    try:
        terminal.type("bash -c 'echo STARTED-$((5*5)); exec sleep 100'\r")
        terminal.expect(r"STARTED-25")
        started = time.monotonic()
        terminal.type("\x03")
        terminal.type("echo RC-$?-$((7*7))\r")
        terminal.expect(r"RC-130-49", timeout_s=30)  # sleep died of SIGINT (128 + 2); bash read the next line
        assert time.monotonic() - started < 30
        assert proc.poll() is None  # no KeyboardInterrupt here: the byte went to the remote terminal
        terminal.type("echo STILL-$((8*8))\r")
        terminal.expect(r"STILL-64")
        terminal.type("exit\r")
        assert _ended(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert termios.tcgetattr(terminal.slave) == before


def test_the_terminal_mode_comes_back_when_the_remote_end_closes_first(app_file, terminal):
    before = termios.tcgetattr(terminal.slave)
    proc = terminal.start("shell", f"{app_file}::job", "--cmd", "echo UP-$((9*9)); kill -9 $$")
    terminal.expect(r"UP-81")
    assert _ended(proc) == 137
    assert termios.tcgetattr(terminal.slave) == before


def test_no_pty_keeps_pipes_even_from_a_terminal(app_file, terminal):
    proc = terminal.start("shell", f"{app_file}::job", "--no-pty", "--cmd",
                          "test -t 0 || echo NO-TTY-$((3*4)); echo ERR-$((2*2)) >&2")
    terminal.expect(r"NO-TTY-12")
    assert _ended(proc) == 0
    terminal.expect(r"ERR-4")
