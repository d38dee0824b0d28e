"""The Jupyter server's link to the runtime: found, never started, and asked without blocking the server.

The server's event loop serves every notebook of the user, so nothing here may
block it: the connection (whose hello blocks) is made on a worker thread, and
requests go through the connection's asyncio channel with a deadline.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from remotecell_runtime.protocol.message import Message

from .. import _client, _local, exceptions

REQUEST_TIMEOUT_S = float(os.environ.get("REMOTECELL_PANEL_TIMEOUT_S", "10"))


class NoRuntime(exceptions.ConnectionError):
    """No runtime is running (or it stopped answering): the API says 503."""


class RuntimeLink:
    """One connection to the runtime, remade when the local runtime is replaced by another process.

    >>> link = RuntimeLink()
    >>> await link.request(StatusMsg())
    {'runtime_id': '9860fc2d', 'pools': [...], ...}
    """

    def __init__(self) -> None:
        self._conn: _client.Connection | None = None
        self._key: tuple[str, int | None] | None = None
        self._lock = asyncio.Lock()

    async def request(self, msg: Message) -> dict[str, Any]:
        """The runtime's reply to ``msg``, without ``t`` and ``id``; raise its error, or NoRuntime."""
        conn = await self._connection()
        try:
            reply = await asyncio.wait_for(conn.arequest(msg.to_wire()), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._drop(conn)
            raise NoRuntime(f"the runtime at {conn.info.address} did not answer within {REQUEST_TIMEOUT_S:g} s") \
                from None
        except exceptions.ConnectionError as exc:  # it stopped, or restarted under the request
            self._drop(conn)
            raise NoRuntime(str(exc)) from exc
        return {k: v for k, v in reply.items() if k not in ("t", "id", "sid")}

    @property
    def address(self) -> str | None:
        return self._conn.info.address if self._conn is not None else None

    async def _connection(self) -> _client.Connection:
        info = _find()
        key = (info.address, info.pid)
        async with self._lock:  # concurrent requests share one connection attempt
            if self._conn is not None and (self._conn.closed or self._key != key):
                self._drop(self._conn)
            if self._conn is None:
                try:
                    self._conn = await asyncio.get_running_loop().run_in_executor(None, _client.Connection, info)
                except (exceptions.ConnectionError, exceptions.AuthError) as exc:
                    raise NoRuntime(str(exc)) from exc
                self._key = key
            return self._conn

    def _drop(self, conn: _client.Connection) -> None:
        """Forget ``conn`` unless another request replaced it already; it closes on a worker thread (it lingers)."""
        if self._conn is not conn:
            return
        self._conn, self._key = None, None
        conn.stop_async_channel()
        asyncio.get_running_loop().run_in_executor(None, conn.close)


def _find() -> _local.ConnectionInfo:
    """The configured runtime (``REMOTECELL_RUNTIME``), else the local one if it runs; never start one.

    Starting the local runtime is the notebook's job (``%load_ext remotecell``, a first call) or
    ``remotecell serve``'s: a runtime started by the server would run user code with the server's
    environment and live as long as the server, which nobody asked for by opening a panel.
    """
    try:
        info = _local.resolve() if os.environ.get("REMOTECELL_RUNTIME") else _local.local_info()
    except (exceptions.ConnectionError, exceptions.AuthError) as exc:  # a missing or unsafe connection file
        raise NoRuntime(str(exc)) from exc
    if info is None:
        raise NoRuntime(f"no remotecell runtime is running (state in {_local.home()}); it starts with a notebook's "
                        "first remote call or `%load_ext remotecell`, or run `remotecell serve`")
    return info
