"""Definitions on the runtime: one registered by value from this process (``Registration``), or one
found by name in a deployed app (``Lookup``).

Below ``functions``, ``cls`` and ``app`` on purpose: a registration knows its app only through
``AppLike`` (what it asks of one), so nothing here imports the modules that build registrations.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, Protocol

from remotecell_runtime.protocol import framing, pickling
from remotecell_runtime.protocol.messages.apps import (
    FnLookupMsg,
    FnLookupReply,
    FnRegisterMsg,
    FnRegisterReply,
    FnVariantMsg,
)
from remotecell_runtime.protocol.spec import ClsSpec

from . import _client
from ._references import by_value_code, check_by_value_python, shipped
from ._user_modules import ship_module_by_value
from .exceptions import InvalidError, SerializationError


class AppLike(Protocol):
    """What a registration asks of its app (``app.App``; ``DeployedApp`` for a definition found by name)."""

    name: str
    _conn: _client.Connection | None
    _runtime_id: str | None

    @property
    def app_id(self) -> str | None: ...

    def ensure_running(self) -> tuple[_client.Connection, str]: ...


class ImageLike(Protocol):
    """What a registration asks of its image (``images.Image``): the ``image`` option, its files sent first."""

    def publish(self, conn: _client.Connection, app_id: str) -> dict[str, Any] | None: ...


class DeployedApp:
    """The deployed app of a definition found by name: known here by its name only, never started from here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._conn: _client.Connection | None = None
        self._runtime_id: str | None = None

    @property
    def app_id(self) -> str | None:
        return None

    def ensure_running(self) -> tuple[_client.Connection, str]:
        raise InvalidError(f"app {self.name!r} is deployed elsewhere: a handle found by name cannot start it")

    def __repr__(self) -> str:
        return f"<rc.App {self.name} (deployed)>"


class Registration:
    """One definition on the runtime: what a pool of containers loads (a function or a ClsSpec)."""

    def __init__(self, app: AppLike, target: Any, options: dict[str, Any], name: str,
                 image: ImageLike | None = None, *, serialized: bool = False,
                 include_source: bool | None = None) -> None:
        self.app = app
        self.serialized, self.include_source = serialized, include_source  # how it travels: _references
        self.image = image
        self.target = target
        self.options = options
        self.name = name
        self._fid: str | None = None
        self._fid_app: str | None = None
        self._lock = threading.Lock()
        self.web_url: str | None = None  # a web endpoint's URL, as the runtime that registered it said
        self.web_urls: dict[str, str] = {}  # a class's web methods' URLs, by method

    def forget(self) -> None:
        self._fid = None

    @property
    def registered(self) -> bool:
        return self._fid is not None

    def cached(self) -> tuple[_client.Connection, str] | None:
        """``fid()`` without blocking, when it is known for the running app (the hot path of ``.aio``)."""
        app = self.app
        conn, fid = app._conn, self._fid
        if conn is None or fid is None or conn.closed or self._fid_app != app.app_id:
            return None
        if app._runtime_id != conn.runtime_id:
            return None
        return conn, fid

    def _body(self) -> framing.Payload:
        """The definition as it travels: by reference (its module's name and source) or by value (``_references``).
        Its module is marked by value either way: arguments of its classes still travel as they did."""
        definition = getattr(self.target, "cls", self.target)
        ship_module_by_value(definition)
        target = shipped(self.target, serialized=self.serialized, include_source=self.include_source)
        if by_value_code(definition, target):
            check_by_value_python(self.name, getattr(self.image, "declared_python", None))
        try:
            return framing.Payload([pickling.dumps(target)])
        except Exception as exc:
            raise SerializationError(f"{self.name} cannot be pickled to ship it: {exc}") from exc

    def is_generator(self, method: str | None) -> bool:
        user_fn = getattr(self.target.cls, method) if method else self.target
        return inspect.isgeneratorfunction(user_fn) or inspect.isasyncgenfunction(user_fn)

    def meta(self) -> dict[str, Any]:
        """What a caller without the code needs (``Function.from_name``): the generators, a class's methods."""
        methods = list(self.target.methods) if isinstance(self.target, ClsSpec) else []
        names = methods or [""]  # "" is a plain function
        meta: dict[str, Any] = {"generators": [m for m in names if self.is_generator(m or None)]}
        return meta | ({"methods": methods} if methods else {})

    def fid(self) -> tuple[_client.Connection, str]:
        """Register the current definition with the running app (once)."""
        conn, app_id = self.app.ensure_running()
        with self._lock:
            if self._fid is None or self._fid_app != app_id:
                options = {k: v for k, v in self.options.items() if k != "not_in_effect"}
                if not getattr(self.app, "schedules_fire", True):
                    options.pop("schedule", None)
                body = self._body()  # first: a definition that cannot travel fails before its image is built
                image = self.image.publish(conn, app_id) if self.image is not None else None
                if image is not None:
                    options["image"] = image
                register = FnRegisterMsg(app_id=app_id, name=self.name, options=options, meta=self.meta())
                reply = conn.ask(register, FnRegisterReply, [body])
                self._fid, self.web_url, self.web_urls = reply.fid, reply.web_url, dict(reply.web_urls)
                self._fid_app = app_id
            return conn, self._fid


class Lookup(Registration):
    """A deployed definition found by name; looked up again when the runtime restarted."""

    def __init__(self, app_name: str, name: str) -> None:
        super().__init__(DeployedApp(app_name), None, {}, name)
        self._meta: dict[str, Any] = {}
        self._conn: _client.Connection | None = None
        self._runtime_id = ""
        self.fid()  # a name that is not deployed fails here, not at the first call

    def fid(self) -> tuple[_client.Connection, str]:
        with self._lock:
            conn = _client.connection()
            if self._fid is None or self._conn is not conn or self._runtime_id != conn.runtime_id:
                runtime_id = conn.runtime_id
                reply = self._ask(conn)
                self._fid, self._conn, self._runtime_id = reply.fid, conn, runtime_id
                self.options, self._meta, self.web_url = reply.options, reply.meta, reply.web_url
                self.web_urls = dict(reply.web_urls)
            return conn, self._fid

    def _ask(self, conn: _client.Connection) -> FnLookupReply:
        return conn.ask(FnLookupMsg(app=self.app.name, name=self.name), FnLookupReply)

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


class VariantLookup(Lookup):
    """A variant of a deployed class (``Cls.from_name(...).with_options(...)``): the runtime registers it in the
    deployed app as ``Name.VARIANT`` from the class's definition with ``overrides`` over its options (the same
    request again finds the same one), asked again after a runtime restart."""

    def __init__(self, app_name: str, name: str, variant: str, overrides: dict[str, Any]) -> None:
        self.base, self.variant, self.overrides = name, variant, overrides
        super().__init__(app_name, f"{name}.{variant}")

    def _ask(self, conn: _client.Connection) -> FnLookupReply:
        msg = FnVariantMsg(app=self.app.name, name=self.base, variant=self.variant, options=self.overrides)
        return conn.ask(msg, FnLookupReply)


def code_elsewhere(name: str) -> Callable[..., Any]:
    def local(*args: Any, **kwargs: Any) -> Any:
        raise InvalidError(f"{name} was found by name: its code is not in this process. Call {name}.remote(...)")

    local.__name__ = local.__qualname__ = name
    return local


