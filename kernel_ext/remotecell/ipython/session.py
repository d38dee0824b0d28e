"""The kernel side of a ``%%remote`` session: one container whose globals persist across cells.

A session is a one-class app on the runtime (``max_containers=1``, kept warm)
whose instance, a :class:`~remotecell.ipython.worker.SessionWorker`, runs the
cells.  Each answer names the worker instance that gave it (a token): when the
container was replaced (crash, out of memory, a stop), the next cell is told
so, says that the state is gone, and runs in the fresh one.  Names a cell uses
that exist here but not there are pushed by value before it runs.

No IPython here: the magics (``magics.py``) give a namespace and an output sink.

>>> s = RemoteSession("default")
>>> s.run("x = 41", {})
>>> s.run("x + 1", {})
42
"""

from __future__ import annotations

import ast
import itertools
import linecache
import os
import re
import symtable
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from remotecell_runtime.protocol import framing, pickling, sharedmem
from remotecell_runtime.protocol.errors import ErrorName
from remotecell_runtime.protocol.messages.calls import ResultEntry
from remotecell_runtime.protocol.messages.session import ErrorInfo
from remotecell_runtime.protocol.spec import ClsSpec

from .. import _client, _invocation
from ..app import App
from ..exceptions import FunctionTimeoutError, InvalidError, SerializationError
from ..options import check_function_options, check_gpu, check_range
from ..registration import Registration
from .worker import CellOutcome, SessionWorker

CELL_LIMIT_S = 86400  # the runtime's longest timeout: no cell runs longer; --timeout S sets less
PUSH_REPORT_BYTES = 10 * 1024 * 1024  # pushes larger than this are reported in one line
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
# IPython's output history (_, __, _i, _ii, _3, _i3) stays local.
_HISTORY = re.compile(r"^(_{1,3}|_i{1,3}|_i?\d+)$")
_WORKER_FILE = os.path.join("remotecell", "ipython", "worker.py")

OutputSink = Callable[[str, str], None]


class SessionDied(RuntimeError):
    """The session's container died under a cell (crash, out of memory, stopped); its state is gone."""


def check_session_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidError(f"session name {name!r} must be 1 to 40 letters, digits, '_' or '-'")
    return name


def check_cell_timeout(timeout_s: Any) -> float | None:
    if timeout_s is None:
        return None
    return float(check_range("--timeout", timeout_s, 1, CELL_LIMIT_S, float))


def names_used(source: str) -> list[str]:
    """Global names a cell reads before it binds them: what may need pushing.

    ``symtable`` gives the names read at top level and the globals read inside
    functions and classes (not their parameters or locals); a name the cell
    binds in an earlier statement than its first read is its own.

    >>> names_used("y = x + 1\\nprint(y)")
    ['print', 'x']
    """
    table = symtable.symtable(source, "<cell>", "exec")
    read = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    for child in _descendants(table):
        read |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
    tree = ast.parse(source)
    top = {s.get_name() for s in table.get_symbols()}
    read |= {n.target.id for n in ast.walk(tree)  # `x += 1` reads x, which symtable does not count
             if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name) and n.target.id in top}
    first_read, first_bound = _first_statements(tree)
    never = len(source)  # past any statement index
    return sorted(n for n in read if first_read.get(n, 0) <= first_bound.get(n, never))


def _descendants(table: symtable.SymbolTable) -> Iterator[symtable.SymbolTable]:
    for child in table.get_children():
        yield child
        yield from _descendants(child)


def _first_statements(tree: ast.Module) -> tuple[dict[str, int], dict[str, int]]:
    """For each name, the index of the first top-level statement that reads it, and that binds it."""
    first_read: dict[str, int] = {}
    first_bound: dict[str, int] = {}
    for index, stmt in enumerate(tree.body):
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                first_read.setdefault(node.id, index)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):  # x += 1 reads x
                first_read.setdefault(node.target.id, index)
        for name in _bound_at_top(stmt):
            first_bound.setdefault(name, index)
    return first_read, first_bound


def _bound_at_top(stmt: ast.stmt) -> Iterator[str]:
    """Names a statement binds in the module scope (not inside functions, classes, comprehensions)."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
              ast.DictComp, ast.GeneratorExp)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield stmt.name
        return
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            yield alias.asname or alias.name.split(".")[0]
        return
    todo: list[ast.AST] = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            yield node.id
        todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, scopes))


def _split_names(value: str | Iterable[str], option: str) -> list[str]:
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise InvalidError(f"{option}: {', '.join(map(repr, bad))} is not a variable name; "
                           "give names separated by commas, e.g. a,b")
    return names


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:,.1f} kB"


class RemoteSession:
    """One remote interpreter: a container whose globals persist across cells.

    ``gpu`` is a resource of the container (changing it means a new session);
    ``timeout_s`` is the default limit of each cell, after which the cell is
    interrupted as by Ctrl-C and the state is kept.
    """

    def __init__(self, name: str = "default", gpu: str | list[str] | None = None,
                 timeout_s: float | None = None) -> None:
        self.name = check_session_name(name)
        self.gpu = check_gpu(gpu)
        self.timeout_s = check_cell_timeout(timeout_s)
        self.app = App(f"session-{name}")
        options = check_function_options({"gpu": self.gpu, "timeout": CELL_LIMIT_S, "min_containers": 1,
                                          "max_containers": 1})
        options["crash_retries"] = 0  # a cell must never rerun on a fresh container behind the user's back
        spec = ClsSpec(SessionWorker, {}, ["run_cell", "names"], ["start"], [])
        self.registration = Registration(self.app, spec, options, "session")
        self.token: str | None = None  # the worker instance that holds our state
        self.lost: str | None = None   # why the previous instance died, said at the next cell
        self.where = ""
        self._cells = itertools.count(1)

    @property
    def started(self) -> bool:
        return self.token is not None

    def describe(self) -> str:
        """One line: name, resources, where it runs."""
        gpu = f"gpu={self.gpu!r}" if self.gpu else "no GPU"
        limit = f"cells stop after {self.timeout_s:g} s" if self.timeout_s else "no cell timeout"
        state = f"running ({self.where})" if self.started else "not started"
        if self.lost:
            state = "died: the next cell starts a fresh one"
        return f"session {self.name!r}: {gpu}, {limit}; {state}"

    # -- running a cell -------------------------------------------------------------------------

    def run(self, source: str, namespace: dict[str, Any], push: str | Iterable[str] = (),
            pull: str | Iterable[str] = (), timeout_s: float | None = None, on_output: OutputSink | None = None,
            exclude: Iterable[str] = ()) -> Any:
        """Run ``source`` in the session; return its last expression's value.

        ``namespace`` is where local names come from (pushed when the session
        lacks them, or always when listed in ``push``) and where ``pull``
        copies session variables to.  A syntax error is raised here, before
        anything is sent.
        """
        filename = f"<remote cell {self.name}:{next(self._cells)}>"
        ast.parse(source, filename, "exec")  # a SyntaxError is reported here, without a round trip
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        limit_s = check_cell_timeout(timeout_s) or self.timeout_s
        push_names, pull_names = _split_names(push, "--push"), _split_names(pull, "--pull")
        missing_here = [n for n in push_names if n not in namespace]
        if missing_here:
            raise InvalidError(f"--push: no variable {', '.join(missing_here)} here to push")
        hidden = set(exclude)
        wanted = [n for n in names_used(source) if n in namespace and n not in hidden and not _HISTORY.match(n)]
        forced = self._picklable({n: namespace[n] for n in push_names})
        if self.lost:
            print(f"remotecell: starting a fresh session {self.name!r}: the previous one died, its state is gone",
                  file=sys.stderr)
            self.lost = None
        pushed = forced
        for _ in range(3):  # at most: a stale answer, then names to push, then the run
            outcome = self._call([source, filename, self.token, wanted, pushed, pull_names], on_output, limit_s)
            if outcome.stale:
                print(f"remotecell: session {self.name!r} was restarted since the last cell (its container "
                      "stopped or crashed): its state is gone", file=sys.stderr)
                self.token, pushed = None, forced
            elif outcome.missing:
                pushed = forced | self._picklable({n: namespace[n] for n in outcome.missing})
                wanted = [n for n in wanted if n in pushed or n not in outcome.missing]  # drop what cannot travel
                self.token = outcome.token
            else:
                break
        else:
            raise RuntimeError(f"session {self.name!r} did not run the cell after three tries")
        self.token, self.where = outcome.token, outcome.where
        namespace.update(outcome.pulled)
        if outcome.not_found:
            print(f"remotecell: --pull: session {self.name!r} has no variable {', '.join(outcome.not_found)}",
                  file=sys.stderr)
        return None if source.rstrip().endswith(";") else outcome.value

    def _picklable(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values that can travel; the others are named in one line and left out."""
        bad = []
        for name, value in values.items():
            try:
                pickling.dumps(value)
            except Exception as exc:
                bad.append(f"{name} ({type(value).__name__}: {exc})")
        if bad:
            print(f"remotecell: not pushed (cannot be pickled): {'; '.join(bad)}", file=sys.stderr)
        return {n: v for n, v in values.items() if not any(b.startswith(f"{n} (") for b in bad)}

    def names(self) -> list[str]:
        """The session's variables (starts the session if it is not running)."""
        reply, payloads = self._roundtrip("names", [], None, None)
        return list(_client.result_value(reply, payloads))

    # -- the call ---------------------------------------------------------------------------------

    def _call(self, args: list[Any], on_output: OutputSink | None, limit_s: float | None) -> CellOutcome:
        pushed = args[4]
        reply, payloads = self._roundtrip("run_cell", args, on_output, limit_s, report_push=bool(pushed))
        status = ResultEntry.from_wire(reply).status
        if status == "cancelled":  # only our timer cancels without an interrupt here
            raise FunctionTimeoutError(f"the cell ran past its timeout of {limit_s:g} s and was interrupted; "
                                       f"session {self.name!r} keeps its state")
        if status == "error":
            raise self._error(reply, payloads)
        try:
            outcome = _client.result_value(reply, payloads)
        except Exception as exc:  # the value's type cannot be rebuilt here: the cell ran all the same
            self._resync()
            raise SerializationError(f"the cell ran, but its value cannot be rebuilt here ({exc}); it stays in "
                                     f"session {self.name!r} as `_`") from None
        assert isinstance(outcome, CellOutcome)
        return outcome

    def _resync(self) -> None:
        """After an answer we could not read: learn which worker instance holds the state."""
        self.token = None
        outcome = self._call(["None", "<resync>", None, [], {}, []], None, None)
        self.token = outcome.token

    def _roundtrip(self, method: str, args: list[Any], on_output: OutputSink | None, limit_s: float | None,
                   report_push: bool = False) -> tuple[dict[str, Any], list[framing.Payload]]:
        conn, fid = self.registration.fid()
        target = _invocation.Target(conn, fid, method, f"session {self.name!r}")
        header = target.header()
        try:
            payload = pickling.serialize((args, {}), sharedmem.ShmPool.local() if conn.shm else None)
        except Exception as exc:
            raise SerializationError(f"cannot send the cell to session {self.name!r}: {exc}") from exc
        if report_push and payload.nbytes > PUSH_REPORT_BYTES:
            print(f"remotecell: pushed {', '.join(sorted(args[4]))} ({_size(payload.nbytes)}) to session "
                  f"{self.name!r}", file=sys.stderr)
        timer = threading.Timer(limit_s, self._cancel, [conn, header["id"]]) if limit_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            return _invocation.exchange(target, header, payload, on_output)
        except KeyboardInterrupt:  # the pipeline cancelled it
            print(f"remotecell: interrupted the remote cell; session {self.name!r} keeps its state",
                  file=sys.stderr)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _cancel(self, conn: _client.Connection, input_id: str) -> None:
        """The cell passed its timeout: cancel it as an interrupt would (SIGINT, then a stop after a grace)."""
        conn.channel().cancel([input_id])  # the timer thread's channel, closed when the timer thread ends

    def _error(self, reply: dict[str, Any], payloads: list[framing.Payload]) -> BaseException:
        """The cell's exception, with the remote traceback of the cell's own frames only."""
        error = ResultEntry.from_wire(reply).error or ErrorInfo(type="Error", message="")
        if error.type == ErrorName.CRASHED:
            self.token, self.lost = None, error.message
            return SessionDied(f"session {self.name!r} died while running this cell: {error.message}\n"
                               "Its state is gone; the next %%remote cell starts a fresh session.")
        error.frames = [f for f in error.frames if not str(f[0]).endswith(_WORKER_FILE)]
        exc = _client.error_from(error, payloads)
        if error.frames:
            exc.remote_cell_traceback = _client.format_frames(  # type: ignore[attr-defined]
                error.frames, error.type, error.message)
        return exc

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """End the session: its container stops and its state is gone."""
        self.app.stop()
        self.token = None
        self.lost = None
        self.registration.forget()


class Sessions:
    """The kernel's sessions by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, RemoteSession] = {}

    def get(self, name: str = "default", gpu: Any = ..., timeout_s: Any = ...) -> RemoteSession:
        """The session ``name``; with ``gpu`` given and different, a restarted one (saying so)."""
        session = self.by_name.get(check_session_name(name))
        if session is None:
            session = self.by_name[name] = RemoteSession(name, None if gpu is ... else gpu,
                                                         None if timeout_s is ... else timeout_s)
            return session
        if timeout_s is not ...:
            session.timeout_s = check_cell_timeout(timeout_s)
        if gpu is not ... and check_gpu(gpu) != session.gpu:
            fresh = RemoteSession(name, gpu, session.timeout_s)
            if session.started:
                print(f"remotecell: restarting session {name!r} with gpu={fresh.gpu!r} (was {session.gpu!r}): "
                      "its state is gone", file=sys.stderr)
            session.stop()
            session = self.by_name[name] = fresh
        return session

    def stop(self, name: str | None = None) -> list[str]:
        """Stop one session (or all with ``None``); the names of those stopped."""
        names = list(self.by_name) if name is None else [check_session_name(name)]
        stopped = []
        for n in names:
            session = self.by_name.pop(n, None)
            if session is not None:
                session.stop()
                stopped.append(n)
        return stopped
