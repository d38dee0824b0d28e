"""Remote functions: registration by value and the calling forms."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import sysconfig
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from . import _client, _wire
from ._bridge import Twin
from .exceptions import InvalidError, SerializationError

if TYPE_CHECKING:
    from .app import App

_INSTALLED = tuple(
    os.path.realpath(p) for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                                  sysconfig.get_paths()["stdlib"]}
)


def _ship_module_by_value(fn: Callable[..., Any]) -> None:
    """Functions from the user's own files travel by value, like those of ``__main__``.

    The runtime cannot import a module that lives only in the caller's working
    directory (a script, a test file); installed packages are imported there.
    """
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or module.__name__ == "__main__" or not path:
        return
    if os.path.realpath(path).startswith(_INSTALLED) or module.__name__.split(".")[0] in ("remotecell",):
        return
    cloudpickle.register_pickle_by_value(module)


class Function:
    """A function that runs on the runtime.

    >>> @app.function()
    ... def square(x): return x * x
    >>> square.remote(4)          # runs remotely, returns 16
    >>> await square.remote.aio(4)
    >>> square.local(4)           # runs here
    """

    def __init__(self, app: App, fn: Callable[..., Any], options: dict[str, Any], name: str) -> None:
        self.app = app
        self.raw_f = fn
        self.options = options
        self.name = name
        self._fid: str | None = None
        self._fid_app: str | None = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        self.remote = Twin(self._remote, self._remote_aio)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function here, in this process."""
        return self.raw_f(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(
            f"{self.name} is a remote function: call {self.name}.remote(...) to run it on the runtime, "
            f"or {self.name}.local(...) to run it here"
        )

    @property
    def options_in_effect(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k != "not_in_effect"}

    # -- registration -------------------------------------------------------------------------

    def _forget_registration(self) -> None:
        self._fid = None

    def _body(self) -> _wire.Payload:
        _ship_module_by_value(self.raw_f)
        try:
            return _wire.Payload([_wire.dumps(self.raw_f)])
        except Exception as exc:
            raise SerializationError(f"function {self.name} cannot be pickled to ship it: {exc}") from exc

    def fid(self) -> tuple[_client.Connection, str]:
        """Register the function's current definition with the running app (once)."""
        conn, app_id = self.app.ensure_running()
        with self._lock:
            if self._fid is None or self._fid_app != app_id:
                header = {"t": "fn_register", "app_id": app_id, "name": self.name,
                          "options": self.options_in_effect}
                self._fid = conn.request(header, [self._body()])["fid"]
                self._fid_app = app_id
            return conn, self._fid

    # -- .remote ------------------------------------------------------------------------------

    def _call_header(self, conn: _client.Connection, fid: str) -> dict[str, Any]:
        return {"t": "call", "id": conn.new_id(), "fid": fid, "sid": conn.sid, "shm": conn.shm}

    def _args_payload(self, conn: _client.Connection, args: tuple, kwargs: dict) -> _wire.Payload:
        try:
            return _wire.serialize((args, kwargs), _wire.ShmPool.local() if conn.shm else None)
        except Exception as exc:
            raise SerializationError(f"arguments of {self.name} cannot be pickled: {exc}") from exc

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function remotely and return its result (or raise its exception)."""
        conn, fid = self.fid()
        header = self._call_header(conn, fid)
        payload = self._args_payload(conn, args, kwargs)
        channel = conn.channel()
        try:
            reply, payloads = channel.roundtrip(header, [payload])
        except KeyboardInterrupt:
            channel.sock.send_multipart(_wire.encode({"t": "cancel", "sid": conn.sid, "ids": [header["id"]]}))
            print(f"remotecell: interrupted; cancelled the remote call to {self.name}", file=sys.stderr)
            raise
        return _client.result_value(reply, payloads)

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        conn, fid = await asyncio.to_thread(self.fid)
        header = self._call_header(conn, fid)
        payload = self._args_payload(conn, args, kwargs)
        channel = conn.async_channel()
        try:
            reply, payloads = await channel.roundtrip(header, [payload])
        except asyncio.CancelledError:
            await channel.send({"t": "cancel", "sid": conn.sid, "ids": [header["id"]]})
            raise
        return _client.result_value(reply, payloads)

    def __repr__(self) -> str:
        return f"<rc.Function {self.app.name}.{self.name}>"

