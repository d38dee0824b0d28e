"""Apps: a named group of functions that starts on the runtime and stops with its owner."""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import _client
from .exceptions import InvalidError
from .options import batching_of, check_function_options, concurrency_of


class App:
    """A group of functions deployed together.

    >>> app = rc.App("demo")
    >>> @app.function(timeout=60)
    ... def square(x): return x * x
    >>> with app.run():
    ...     square.remote(3)
    9

    Without ``app.run()`` the first call starts the app as an ephemeral app that
    lives as long as this process (the notebook case).
    """

    def __init__(self, name: str = "app") -> None:
        if not isinstance(name, str) or not name or len(name) > 64:
            raise InvalidError(f"App name {name!r} must be a non-empty string of at most 64 characters")
        self.name = name
        self.functions: dict[str, Any] = {}
        self._app_id: str | None = None
        self._conn: _client.Connection | None = None
        self._lock = threading.RLock()
        self._implicit = False
        self._runtime_id: str | None = None

    def function(self, _fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Declare a remote function: ``@app.function(gpu="any", timeout=600)``."""
        from .functions import Function, Registration

        checked = check_function_options(options)

        def wrap(fn: Callable[..., Any]) -> Function:
            if not callable(fn) or isinstance(fn, type):
                raise InvalidError(f"@app.function needs a function, got {fn!r}; use @app.cls for classes")
            name = options.get("name") or fn.__qualname__
            batch = batching_of(fn)
            full = checked | concurrency_of(fn) | ({"batched": {"": batch}} if batch else {})
            f = Function(Registration(self, fn, full, name), fn)
            self.functions[f.name] = f
            return f

        return wrap(_fn) if _fn is not None else wrap

    def cls(self, _cls: type | None = None, **options: Any) -> Any:
        """Declare a remote class: ``@app.cls(gpu="any")`` with ``@rc.enter``/``@rc.method``/``@rc.exit``."""
        from .cls import Cls

        checked = check_function_options(options)

        def wrap(user_cls: type) -> Cls:
            if not isinstance(user_cls, type):
                raise InvalidError(f"@app.cls needs a class, got {user_cls!r}")
            name = options.get("name") or user_cls.__qualname__
            c = Cls(self, user_cls, checked | concurrency_of(user_cls), name)
            self.functions[c.name] = c
            return c

        return wrap(_cls) if _cls is not None else wrap

    @property
    def app_id(self) -> str | None:
        return self._app_id

    def ensure_running(self) -> tuple[_client.Connection, str]:
        """The app's id on the runtime, starting it as a process-long ephemeral app if needed."""
        with self._lock:
            conn = _client.connection()
            if self._app_id is None or self._conn is not conn or self._runtime_id != conn.runtime_id:
                self._start(conn)
                self._implicit = True
                atexit.register(self._stop_quietly)
            assert self._app_id is not None
            return conn, self._app_id

    def _start(self, conn: _client.Connection) -> None:
        runtime_id = conn.runtime_id
        reply = conn.request({"t": "app_create", "name": self.name, "mode": "ephemeral"})
        self._app_id, self._conn, self._runtime_id = reply["app_id"], conn, runtime_id
        conn.on_restart.add(self)
        for f in self.functions.values():
            f.forget_registrations()

    def restart_after_runtime_restart(self, conn: _client.Connection) -> None:
        """The runtime restarted: start the app there again and register what was registered.

        Spawned calls of this app that were unfinished then wait for exactly that.
        """
        with self._lock:
            if self._app_id is None or self._conn is not conn:
                return
            registered = [r for f in self.functions.values() for r in f.registrations() if r.registered]
            self._start(conn)
            for registration in registered:
                registration.fid()

    @contextlib.contextmanager
    def run(self) -> Iterator[App]:
        """Run the app for the duration of the block (an ephemeral app)."""
        with self._lock:
            if self._app_id is not None and self._implicit:
                self._stop_quietly()
            self._start(_client.connection())
            self._implicit = False
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the app on the runtime: its containers stop, waiting inputs are cancelled."""
        with self._lock:
            app_id, conn = self._app_id, self._conn
            self._app_id = self._conn = None
        if app_id is not None and conn is not None and not conn.closed:
            conn.request({"t": "app_stop", "app_id": app_id})

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = f"running as {self._app_id}" if self._app_id else "not running"
        return f"<rc.App {self.name!r}, {len(self.functions)} function(s), {state}>"
