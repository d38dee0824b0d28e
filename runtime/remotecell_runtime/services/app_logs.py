"""What the inputs of each app printed, for ``remotecell app logs NAME [--follow]``: in memory, the last lines.

``Calls.on_output`` adds every ``output`` chunk that passes through the daemon (calls, map inputs,
spawned calls, schedules), named by its function; a leaseholder's direct calls do not pass here (their
output goes to their caller only). A reader asks for the entries after the last it saw and, to follow,
waits up to ``wait_s`` for new ones (answered as they come). ``unsent_only`` (``rc.enable_output``,
``remotecell run``): only what went to no caller (spawned calls, schedules), with each one's input id; the
caller got the rest itself. Logs of a stopped app stay until ``MAX_APPS`` newer apps have logged.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from ..pools import Peer
from ..protocol import framing
from ..protocol.framing import Frame
from ..protocol.messages.apps import AppLogsReply
from .base import with_id

MAX_ENTRIES = 10_000  # per app
MAX_APPS = 64  # apps whose logs are kept, the latest


@dataclass
class Entry:
    seq: int
    function: str
    text: str
    input_id: str
    unsent: bool  # it went to no caller (a spawned call's, a schedule's): what ``rc.enable_output`` follows


@dataclass
class AppLog:
    app_id: str
    name: str
    entries: collections.deque[Entry] = field(default_factory=lambda: collections.deque(maxlen=MAX_ENTRIES))
    seq: int = 0
    waiters: list[tuple[Peer, str, int, bool, asyncio.TimerHandle]] = field(default_factory=list)

    def after(self, after: int, unsent_only: bool = False) -> list[list[str]]:
        """``[function, text, input id]`` of each entry after ``after`` (only those no caller got: ``unsent_only``)."""
        return [[e.function, e.text, e.input_id] for e in self.entries
                if e.seq > after and (e.unsent or not unsent_only)]


class AppLogs:
    """The logs of the latest apps, by app id."""

    def __init__(self, send: Callable[[Peer, list[Frame]], None]) -> None:
        self.logs: dict[str, AppLog] = {}
        self._send = send  # Host.send_peer

    def of(self, app_id: str, name: str) -> AppLog:
        """The log of app ``app_id``, made empty if it has none yet (the oldest app's log goes past MAX_APPS)."""
        log = self.logs.get(app_id)
        if log is None:
            log = self.logs[app_id] = AppLog(app_id, name)
            while len(self.logs) > MAX_APPS:
                self.logs.pop(next(iter(self.logs)))
        return log

    def add(self, app_id: str, name: str, function: str, text: str, input_id: str = "", unsent: bool = False) -> None:
        log = self.of(app_id, name)
        log.seq += 1
        log.entries.append(Entry(log.seq, function, text, input_id, unsent))
        if not log.waiters:
            return
        waiters, log.waiters = log.waiters, []
        for waiter in waiters:
            peer, request_id, after, unsent_only, timer = waiter
            if unsent_only and not unsent:  # not what this follower waits for: it waits on
                log.waiters.append(waiter)
                continue
            timer.cancel()
            self.answer(peer, request_id, log, after, True, unsent_only)

    def find(self, app_id: str | None, name: str) -> AppLog | None:
        """The log of ``app_id`` if given, else the latest of an app called ``name``."""
        if app_id is not None and app_id in self.logs:
            return self.logs[app_id]
        return next((log for log in reversed(self.logs.values()) if log.name == name), None)

    def wait(self, peer: Peer, request_id: str, log: AppLog, after: int, wait_s: float, live: bool,
             unsent_only: bool = False) -> None:
        """Answer when an entry after ``after`` comes, or with none after ``wait_s``."""
        def timed_out() -> None:
            log.waiters[:] = [w for w in log.waiters if w[1] != request_id]
            self.answer(peer, request_id, log, after, live, unsent_only)

        timer = asyncio.get_running_loop().call_later(wait_s, timed_out)
        log.waiters.append((peer, request_id, after, unsent_only, timer))

    def answer(self, peer: Peer, request_id: str, log: AppLog, after: int, live: bool,
               unsent_only: bool = False) -> None:
        reply = AppLogsReply(entries=log.after(after, unsent_only), next=log.seq, live=live)
        self._send(peer, framing.encode(with_id(reply, request_id)))
