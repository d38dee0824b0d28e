"""Handles on deployed functions and classes, found by name from any process (``from_name``).

The caller does not have the code: a ``fn_lookup`` gives the definition's fid and
what the calling forms need to know (its options, which methods are generators),
and from there a handle calls exactly as a ``Function`` of one's own app does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _client
from .app import App
from .exceptions import InvalidError
from .functions import Function, Registration


class Lookup(Registration):
    """A deployed definition found by name; looked up again when the runtime restarted."""

    def __init__(self, app_name: str, name: str) -> None:
        super().__init__(App(app_name), None, {}, name)
        self._meta: dict[str, Any] = {}
        self._conn: _client.Connection | None = None
        self._runtime_id = ""
        self.fid()  # a name that is not deployed fails here, not at the first call

    def fid(self) -> tuple[_client.Connection, str]:
        with self._lock:
            conn = _client.connection()
            if self._fid is None or self._conn is not conn or self._runtime_id != conn.runtime_id:
                runtime_id = conn.runtime_id
                reply = conn.request({"t": "fn_lookup", "app": self.app.name, "name": self.name})
                self._fid, self._conn, self._runtime_id = str(reply["fid"]), conn, runtime_id
                self.options, self._meta = dict(reply.get("options") or {}), dict(reply.get("meta") or {})
            return conn, self._fid

    def cached(self) -> tuple[_client.Connection, str] | None:
        conn, fid = self._conn, self._fid
        if conn is None or fid is None or conn.closed or self._runtime_id != conn.runtime_id:
            return None
        return conn, fid

    def is_generator(self, method: str | None) -> bool:
        return (method or "") in self._meta.get("generators", [])

    @property
    def methods(self) -> list[str]:
        return [str(m) for m in self._meta.get("methods", [])]


def _code_elsewhere(name: str) -> Callable[..., Any]:
    def local(*args: Any, **kwargs: Any) -> Any:
        raise InvalidError(f"{name} was found by name: its code is not in this process. Call {name}.remote(...)")

    local.__name__ = local.__qualname__ = name
    return local


def function_from_name(app_name: str, name: str) -> Function:
    lookup = Lookup(app_name, name)
    if lookup.methods:
        raise InvalidError(f"{name!r} in deployed app {app_name!r} is a class: use rc.Cls.from_name("
                           f"{app_name!r}, {name!r})")
    return Function(lookup, _code_elsewhere(name))


class DeployedCls:
    """A deployed class found by name: ``Model()`` gives the handle on its instance, whose methods call it.

    >>> Model = rc.Cls.from_name("demo", "Model")
    >>> Model().predict.remote(x)
    """

    def __init__(self, app_name: str, name: str) -> None:
        self._lookup = Lookup(app_name, name)
        self.name = name
        if not self._lookup.methods:
            raise InvalidError(f"{name!r} in deployed app {app_name!r} is a function, not a class: use "
                               f"rc.Function.from_name({app_name!r}, {name!r})")
        self._obj = DeployedObj(self._lookup)

    def __call__(self, **params: Any) -> DeployedObj:
        if params:
            raise InvalidError(f"deployed class {self.name} serves its default instance only: call {self.name}() "
                               "without parameters (deploy one class per parameter set)")
        return self._obj

    def __repr__(self) -> str:
        return f"<rc.Cls {self._lookup.app.name}.{self.name} (deployed)>"


class DeployedObj:
    """The instance of a deployed class: one ``Function`` per ``@rc.method``."""

    def __init__(self, lookup: Lookup) -> None:
        for method in lookup.methods:
            setattr(self, method, Function(lookup, _code_elsewhere(f"{lookup.name}.{method}"), method=method))
