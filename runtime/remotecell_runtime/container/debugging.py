"""Remote post-mortem: the frames of a failed input held for a while, and pdb in them on request.

When an input raises, ``Holds.hold`` keeps its traceback (so its frames and their
locals live on) under a random key for ``REMOTECELL_DEBUG_HOLD_S`` seconds (default
300; 0 turns holding off), at most ``MAX_HELD`` at once per container (the oldest let
go first). The key travels in the error (``ErrorInfo.debug``), and the daemon hears how
long the container holds (``debug_held``) so scale-down leaves it alone meanwhile.

Holding blocks nothing: the container keeps serving its function's inputs. Each pdb
command (``debug_in``) runs on this module's own thread, never the I/O thread, so a slow
``p expr`` delays only the debugger; its printed text goes back as ``debug_out``. One
``pdb.Pdb`` per held traceback, its stdout a buffer: commands that would run code on
(``step``, ``next``, ``until``, ``jump``, ...) or read the container's stdin
(``interact``) are refused, ``q``/``c`` end the session. A sweeper thread lets frames
go when their time is up, and the key then answers why.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import linecache
import os
import queue
import secrets
import sys
import threading
import time
import traceback
from types import TracebackType

from ..protocol.framing import Payload
from ..protocol.messages.debug import ENDED, OPEN, RELEASED, DebugHeldMsg, DebugInMsg, DebugOutMsg, DebugReply
from .outbox import Outbox

HOLD_ENV = "REMOTECELL_DEBUG_HOLD_S"
DEFAULT_HOLD_S = 300.0
MAX_HELD = 8  # tracebacks held at once per container: frames keep their locals (arrays, tensors) alive
GONE_KEPT = 64  # keys let go whose reason is still told

_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_QUIT = {"q", "quit", "exit", "c", "cont", "continue"}
_REFUSED = {"s", "step", "n", "next", "r", "return", "unt", "until", "j", "jump", "run", "restart", "interact",
            "debug", "b", "break", "tbreak", "cl", "clear", "disable", "enable", "ignore", "condition", "commands"}


def hold_seconds() -> float:
    """``REMOTECELL_DEBUG_HOLD_S`` of this container (its function's ``env``/secrets set it), else 300."""
    raw = os.environ.get(HOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_HOLD_S
    try:
        value = float(raw)
    except ValueError:
        print(f"remotecell container: {HOLD_ENV}={raw!r} is not a number of seconds; holding "
              f"{DEFAULT_HOLD_S:g} s", file=sys.__stderr__)
        return DEFAULT_HOLD_S
    return max(0.0, value)


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from the first frame of user code on (the runtime's and the session worker's own frames skipped)."""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith(_RUNTIME_DIR) or filename.endswith(os.path.join("ipython", "worker.py"))):
            return tb
        tb = tb.tb_next
    return None


def learn_sources(sources: dict[str, str]) -> None:
    """The client's text of source files this container cannot read, into ``linecache`` (pdb reads it there)."""
    for filename, text in sources.items():
        if linecache.getlines(filename):  # the container's own file wins
            continue
        lines = text.splitlines(keepends=True)
        linecache.cache[filename] = (len(text), None, lines, filename)  # (no mtime: checkcache keeps it)


class PdbSession:
    """pdb over one held traceback, its text taken after each command.

    >>> s = PdbSession(exc, tb)        # exc.__traceback__ as it was raised
    >>> s.intro()               # the error, then where it raised: '> file(12)f()\\n-> 1 / x'
    >>> s.run("p x")
    ('0\\n', False)
    """

    def __init__(self, exc: BaseException, tb: TracebackType) -> None:
        self.exc = exc
        self.out = io.StringIO()
        import pdb  # only for a post-mortem: pdb, bdb, cmd and code are ~5 ms of every container's start

        self.pdb = pdb.Pdb(stdin=io.StringIO(), stdout=self.out, nosigint=True, readrc=False)
        self.pdb.use_rawinput = False
        self.pdb.reset()
        self.pdb.setup(None, tb)

    def take(self) -> str:
        text = self.out.getvalue()
        self.out.seek(0)
        self.out.truncate()
        return text

    def intro(self) -> str:
        self.pdb.print_stack_entry(self.pdb.stack[self.pdb.curindex])
        return "".join(traceback.format_exception_only(type(self.exc), self.exc)) + self.take()

    def run(self, line: str) -> tuple[str, bool]:
        """One command: what pdb printed, and whether the session ended."""
        word = line.strip().split(maxsplit=1)[0] if line.strip() else ""
        if word in _QUIT:
            return "", True
        if word in _REFUSED:
            return (f"*** {word}: not in a post-mortem (the frames are held, not running); use p, pp, l, ll, "
                    "w, u, d, a, ! statements, q\n"), False
        try:
            self.pdb.onecmd(self.pdb.precmd(line))
        except Exception as exc:  # pdb reports most errors itself; anything else must not end the thread
            self.out.write(f"*** {type(exc).__name__}: {exc}\n")
        return self.take(), False


@dataclasses.dataclass
class Held:
    exc: BaseException
    tb: TracebackType
    hold_s: float
    until: float  # monotonic
    session: PdbSession | None = None


class Holds:
    """The tracebacks this container holds, and the thread that runs pdb commands in them."""

    def __init__(self, container_id: str, outbox: Outbox) -> None:
        self.container_id = container_id
        self.outbox = outbox
        self.held: collections.OrderedDict[str, Held] = collections.OrderedDict()
        self.gone: collections.OrderedDict[str, str] = collections.OrderedDict()  # key -> why it was let go
        self.changed = threading.Condition()
        self.commands: queue.SimpleQueue[DebugInMsg] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def hold(self, exc: BaseException) -> tuple[str, float]:
        """Keep ``exc``'s frames; the ``(CONTAINER:KEY, seconds)`` its error carries, ``("", 0)`` when not held."""
        hold_s = hold_seconds()
        tb = user_frames(exc.__traceback__)
        if hold_s <= 0 or tb is None:
            return "", 0.0
        key = secrets.token_hex(8)
        with self.changed:
            self.held[key] = Held(exc, tb, hold_s, time.monotonic() + hold_s)
            while len(self.held) > MAX_HELD:
                old, _ = self.held.popitem(last=False)
                self._forget(old, f"released: this container held {MAX_HELD} newer failures, and keeps that many")
            self.changed.notify_all()
        self._start_threads()
        self.outbox.send(DebugHeldMsg(hold_s=hold_s))
        return f"{self.container_id}:{key}", hold_s

    def on_debug(self, msg: DebugInMsg, payloads: list[Payload]) -> None:
        """The daemon's ``debug_in``: to the debugger thread (the I/O thread goes on serving)."""
        self._start_threads()
        self.commands.put(msg)

    def _start_threads(self) -> None:
        """The debugger and sweeper threads, once (inputs fail on several worker threads at once)."""
        with self.changed:
            if self.threads:
                return
            for target, name in ((self._serve, "remotecell-debugger"), (self._sweep, "remotecell-debug-holds")):
                self.threads.append(threading.Thread(target=target, name=name, daemon=True))
        for thread in self.threads:
            thread.start()

    def _serve(self) -> None:
        while True:
            msg = self.commands.get()
            request = msg.request
            learn_sources(request.sources)
            text, state = self.command(request.target.partition(":")[2], request.line)
            self.outbox.send(DebugOutMsg(rid=msg.rid, reply=DebugReply(text=text, state=state)))

    def command(self, key: str, line: str | None) -> tuple[str, str]:
        """pdb's answer to ``line`` (None: open the session) in the frames held as ``key``, and the state after."""
        with self.changed:
            held = self.held.get(key)
            why = self.gone.get(key)
        if held is None:
            return (why or "released: this container holds no frames under that key") + "\n", RELEASED
        if line is None or held.session is None:
            held.session = PdbSession(held.exc, held.tb)
            left_s = max(0.0, held.until - time.monotonic())
            return held.session.intro() + f"(remote frames held {left_s:.0f} s more)\n", OPEN
        text, ended = held.session.run(line)
        if ended:
            held.session = None  # the frames stay until their time: a later %debug opens them again
        return text, ENDED if ended else OPEN

    def _forget(self, key: str, why: str) -> None:
        """Under ``changed``: let the frames of ``key`` go, remembering why."""
        self.held.pop(key, None)
        self.gone[key] = why
        while len(self.gone) > GONE_KEPT:
            self.gone.popitem(last=False)

    def _sweep(self) -> None:
        """Let frames go when their time is up (their locals with them)."""
        with self.changed:
            while True:
                now = time.monotonic()
                for key, held in list(self.held.items()):
                    if held.until <= now:
                        name = type(held.exc).__name__
                        self._forget(key, f"released: the frames of that {name} were held {held.hold_s:g} s "
                                          f"({HOLD_ENV}) and are gone")
                soonest = min((held.until for held in self.held.values()), default=None)
                self.changed.wait(None if soonest is None else max(0.05, soonest - now))
