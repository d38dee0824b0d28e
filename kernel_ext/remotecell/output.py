"""``rc.enable_output()`` (Modal's ``modal.output.enable_output``): all of an app's output on this terminal.

>>> with rc.enable_output():
...     with app.run():
...         square.spawn(3)           # what it prints shows here: [square fc-01...] ...
...         list(square.map(range(100)))

Inside the block every line an input prints comes prefixed with whose it is, ``[function input-id]``:
calls and map inputs as their results come (they reach this process anyway), and, for each app
started by ``app.run()`` in the block, what goes to no caller here (spawned calls, schedules), followed
from the runtime's app log until the app's block ends. Image builds print their steps as before; a long
map shows its progress line when stderr is a terminal (``show_progress=False``: none). ``remotecell
run`` runs its entrypoint inside ``enable_output()``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from remotecell_runtime.protocol.messages.apps import AppLogsMsg, AppLogsReply

from . import _client, _progress
from .exceptions import InvalidError

__all__ = ["enable_output"]

FOLLOW_WAIT_S = 0.5  # how long one ask of the app log waits for new lines (so a follower ends within this)
_depth = 0  # nested enable_output blocks
_lock = threading.Lock()


def enabled() -> bool:
    return _depth > 0


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    """Show every app's output here, prefixed ``[function input-id]``, while the block runs (see the module)."""
    global _depth
    if not isinstance(show_progress, bool):
        raise InvalidError(f"enable_output(show_progress={show_progress!r}): give True or False")
    with _lock:
        _depth += 1
        before = _client.LABELS, _progress.DEFAULT_SHOW
        if _client.LABELS is None:
            _client.LABELS = {}
        if not show_progress:
            _progress.DEFAULT_SHOW = False
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            _client.LABELS, _progress.DEFAULT_SHOW = before


class Follower:
    """What one app's inputs printed that reached no caller here (spawned calls, schedules), printed as it comes.

    >>> follower = Follower(conn, app_id).start()
    >>> ...
    >>> follower.stop()     # prints what is left, then returns
    """

    def __init__(self, conn: _client.Connection, app_id: str) -> None:
        self.conn = conn
        self.app_id = app_id
        self.after = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"remotecell-output-{app_id}", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._once(FOLLOW_WAIT_S):
                return

    def _once(self, wait_s: float) -> bool:
        """Print the lines after the last seen; False when there will be no more (the app or runtime is gone)."""
        try:
            reply = self.conn.ask(AppLogsMsg(app=self.app_id, after=self.after, wait_s=wait_s, unsent_only=True),
                                  AppLogsReply, timeout_s=wait_s + 30.0)
        except Exception:  # the runtime went away: nothing more to follow
            return False
        for function, text, *rest in reply.entries:
            who = f"{function} {rest[0]}" if rest and rest[0] else function
            sys.stdout.write(_client.prefixed(who, text if text.endswith("\n") else text + "\n"))
        sys.stdout.flush()
        self.after = reply.next
        return reply.live

    def stop(self) -> None:
        """End following: what came meanwhile is printed before this returns."""
        self._stopping.set()
        self._thread.join(timeout=FOLLOW_WAIT_S + 30.0)
        self._once(0.0)
