"""``%%remote``, ``%remote_session`` and ``%remote_stop``: the IPython face of remote sessions; ``%debug``
for remote exceptions.

>>> %%remote --gpu any --push data --pull result
... result = train(data)
... result.loss

``%debug`` after a remote exception (``.remote``, ``.map``, ``%%remote``) opens pdb in its
container's frames (``remotecell.debugging``); after any other it is IPython's own ``%debug``.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.core.magics import ExecutionMagics
from IPython.display import clear_output, publish_display_data

from .. import _client, _post_mortem, debugging
from ..exceptions import Error
from .session import SessionDied, Sessions


def cell_output(stream: str, text: str) -> None:
    """Where a session's output goes: streams to stdout/stderr, ``display`` bundles to the cell's display."""
    if stream != "display":
        _client.write_output(stream, text)
        return
    try:
        message = json.loads(text)
        if message.get("clear"):
            sys.stdout.flush()
            clear_output(wait=bool(message.get("wait")))
            return
        data, metadata = dict(message["data"]), dict(message.get("metadata") or {})
        transient = dict(message.get("transient") or {})
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # a malformed bundle shows nothing rather than breaking the cell
    sys.stdout.flush()  # what the kernel printed so far comes first
    publish_display_data(data, metadata, transient=transient or None, update=bool(message.get("update")))


def _render_only(exc: BaseException, lines: list[str]) -> BaseException:
    """Make IPython show ``lines`` for ``exc`` instead of a traceback through remotecell's own frames."""
    exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]  # IPython's hook for custom tracebacks
    return exc.with_traceback(None)


@magics_class
class RemoteMagics(Magics):
    """Magics bound to one kernel: its sessions by name."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.sessions = Sessions()

    @magic_arguments()
    @argument("--gpu", default=..., help="GPU spec of the session's container: any, H100, any:2")
    @argument("--timeout", type=float, default=..., help="seconds this cell may run (then it is interrupted)")
    @argument("--push", default="", help="names to send to the session even when it has them: a,b")
    @argument("--pull", default="", help="session variables to copy back here after the cell: c,d")
    @argument("--session", default="default", help="which session (each is its own container)")
    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run the cell in a remote session: its globals persist across %%remote cells.

        stdout/stderr stream into the cell; ``display(...)`` and ``plt.show()``
        show here; the last expression's value comes back. Local names the cell
        uses that the session lacks are pushed. Interrupt the kernel to
        interrupt the remote cell (the session keeps its state).
        """
        args = parse_argstring(self.remote, line)
        assert self.shell is not None  # registered on a shell
        try:
            session = self.sessions.get(args.session, gpu=args.gpu)
            timeout = None if args.timeout is ... else args.timeout
            return session.run(cell, self.shell.user_ns, push=args.push, pull=args.pull, timeout_s=timeout,
                               on_output=cell_output, exclude=self.shell.user_ns_hidden)
        except SyntaxError as exc:  # found here, before anything was sent: the line and a caret
            raise _render_only(exc, "".join(traceback.format_exception_only(exc)).splitlines()) from None
        except KeyboardInterrupt:
            raise _render_only(KeyboardInterrupt(), ["KeyboardInterrupt: the remote cell was interrupted"]) from None
        except Exception as exc:
            remote_tb = getattr(exc, "remote_cell_traceback", None)
            if remote_tb is not None:  # the cell's own frames, with its source lines
                lines = ["Remote traceback (most recent call last):", *remote_tb.rstrip().splitlines()]
                raise _render_only(exc, lines) from None
            if isinstance(exc, (Error, SessionDied)):  # says what happened; our frames would only distract
                raise _render_only(exc, f"{type(exc).__name__}: {exc}".splitlines()) from None
            raise

    @magic_arguments()
    @argument("--session", default="default", help="which session")
    @argument("--gpu", default=..., help="change the GPU spec (restarts the session, saying so)")
    @argument("--timeout", type=float, default=..., help="default seconds a cell may run")
    @argument("--names", action="store_true", help="also list the session's variables")
    @line_magic
    def remote_session(self, line: str) -> None:
        """Show the kernel's remote sessions, or change one's resources: ``%remote_session --gpu any``."""
        args = parse_argstring(self.remote_session, line)
        changing = args.gpu is not ... or args.timeout is not ...
        if changing or args.names:
            session = self.sessions.get(args.session, gpu=args.gpu, timeout_s=args.timeout)
            print(session.describe())
            if args.names:
                print("  variables: " + (", ".join(session.names()) or "none"))
            return
        if not self.sessions.by_name:
            print("no remote sessions yet: a %%remote cell starts one")
        for session in self.sessions.by_name.values():
            print(session.describe())

    @line_cell_magic
    def debug(self, line: str = "", cell: str | None = None) -> Any:
        """``%debug``: after a remote exception, pdb in the frames its container holds (``p``, ``pp``, ``l``,
        ``up``, ``down``, ``q``); otherwise, and with arguments, IPython's own ``%debug``."""
        frames = _post_mortem.of(getattr(sys, "last_value", None)) if cell is None and not line.strip() else None
        if frames is not None:
            return debugging.debug_frames(frames)
        return ExecutionMagics(self.shell).debug(line, cell)

    @magic_arguments()
    @argument("--session", default=None, help="which session (default: all of them)")
    @line_magic
    def remote_stop(self, line: str) -> None:
        """End remote sessions (all, or ``--session NAME``): their containers stop and their state is gone."""
        args = parse_argstring(self.remote_stop, line)
        stopped = self.sessions.stop(args.session)
        print(f"stopped session(s): {', '.join(map(repr, stopped))}" if stopped else "no such session running")
