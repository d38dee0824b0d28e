"""One background thread that keeps the shown views (call handles, batch stats) up to date.

Each shown view is a :class:`Live`: ``tick()`` asks the runtime once, renders
what it heard and says whether it is done (final, or its widget was closed).
The thread ticks every live view every ``POLL_S``; with none left it sleeps
until one is added (no polling).  It stays, rather than ending, because its
requests run on the bridge's private loop of this thread, with a socket of its
own: one thread for the kernel's life keeps one socket.  It is a plain thread,
not a task on the kernel's loop: a slow or unreachable runtime never blocks the
kernel's main thread.

Why a plain thread and not a copy of the cell's context: it sends only widget
(comm) messages and display updates, never cell output, and with no context of
its own ipykernel gives those the parent of the cell that runs now.

>>> poller().add(live)    # ticks until live.tick() returns True, or the kernel shuts down
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Protocol

POLL_S = 0.5

log = logging.getLogger(__name__)


class Live(Protocol):
    def tick(self) -> bool:
        """Ask the runtime once and render; True when nothing more will change."""
        ...


class Poller:
    """Ticks live views from one daemon thread until each is done."""

    def __init__(self, every_s: float = POLL_S) -> None:
        self.every_s = every_s
        self._views: list[Live] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, view: Live) -> None:
        """Tick ``view`` from now on (at once, then every ``every_s``)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._views.append(view)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="remotecell-call-views", daemon=True)
                self._thread.start()
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Nothing to tick."""
        with self._lock:
            return not self._views

    def wake(self) -> None:
        """Tick now instead of at the next period (a button was pressed)."""
        self._wake.set()

    def stop(self) -> None:
        """No more ticks (the kernel shuts down); the thread ends after its current tick."""
        self._stopped.set()
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            for view in self._pending():
                if self._stopped.is_set():
                    return
                if _tick(view):
                    with self._lock:
                        self._views.remove(view)
            self._wake.wait(None if self.idle else self.every_s)

    def _pending(self) -> list[Live]:
        with self._lock:
            return list(self._views)


def _tick(view: Live) -> bool:
    """One tick that never raises: a view that fails is dropped (its last rendering stays).

    Logged at debug level only: a warning would go to stderr, which in a kernel
    is whatever cell runs now.
    """
    try:
        return view.tick()
    except Exception:
        log.debug("remotecell: a call view stopped updating", exc_info=True)
        return True


_poller: Poller | None = None
_poller_lock = threading.Lock()


def poller() -> Poller:
    """This process's poller, stopped when the process (the kernel) exits."""
    global _poller
    with _poller_lock:
        if _poller is None:
            _poller = Poller()
            atexit.register(_poller.stop)
        return _poller
