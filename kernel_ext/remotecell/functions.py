"""Remote functions: registration by value and the calling forms."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from remotecell_runtime.protocol.messages.calls import CacheClearMsg, CacheClearReply

from . import _client, _forms, _invocation
from ._autoscaler import FunctionAutoscalerSettings, update_autoscaler
from ._bridge import Twin, twin
from ._pool_stats import FunctionStats, PoolStats
from .calls import FunctionCall, FunctionCallGroup
from .exceptions import InvalidError
from .registration import Lookup, Registration, code_elsewhere
from .schedules import Schedule, fetch

# Modal's ``modal.functions``
__all__ = ["Function", "FunctionAutoscalerSettings", "FunctionCall", "FunctionCallGroup", "FunctionStats"]


class Function:
    """A function that runs on the runtime.

    >>> @app.function()
    ... def square(x): return x * x
    >>> square.remote(4)          # runs remotely, returns 16
    >>> await square.remote.aio(4)
    >>> square.local(4)           # runs here
    """

    def __init__(self, registration: Registration, local: Callable[..., Any], method: str | None = None) -> None:
        self.registration = registration
        self.app = registration.app
        self.raw_f = local
        self.method = method
        self.name = f"{registration.name}.{method}" if method else registration.name
        self._last_target: _invocation.Target | None = None
        functools.update_wrapper(self, local)
        self.remote = Twin(self._remote, self._remote_aio)
        self.remote_gen = Twin(self._remote_gen, self._remote_gen_aio)
        maps = _forms.MapForms(self.name, self.target_aio, lambda: "cache" in self.options)
        self.map = Twin(maps.map, maps.map_aio)
        self.starmap = Twin(maps.starmap, maps.starmap_aio)
        self.for_each = Twin(maps.for_each, maps.for_each_aio)
        self.retry_failed = Twin(maps.retry_failed, maps.retry_failed_aio)
        spawns = _forms.SpawnForms(self.name, self.target, self.target_aio)
        self.spawn = Twin(spawns.spawn, spawns.spawn_aio)
        self.spawn_map = twin(spawns.spawn_map_aio)
        stats = PoolStats(self.name, method, registration, lambda: self.batching, self.fid_aio)
        self.stats = twin(stats.stats)
        self.batch_stats = twin(stats.batch_stats)
        self.get_current_stats = twin(stats.current_stats)
        self.schedule = twin(self._schedule)
        self.update_autoscaler = twin(functools.partial(update_autoscaler, self.name, self.fid_aio))
        self.cache_clear = twin(self._cache_clear)

    @staticmethod
    def from_name(app_name: str, name: str) -> Function:
        """A handle on function ``name`` of the deployed app ``app_name``, from any process.

        >>> square = rc.Function.from_name("demo", "square")
        >>> square.remote(3), list(square.map(range(3))), square.spawn(4).get()
        (9, [0, 1, 4], 16)

        Raises ``NotFoundError`` when no such app or function is deployed. Calls after a
        redeploy go to the new definition.
        """
        lookup = Lookup(app_name, name)
        if lookup.methods:
            raise InvalidError(f"{name!r} in deployed app {app_name!r} is a class: use rc.Cls.from_name("
                               f"{app_name!r}, {name!r})")
        return Function(lookup, code_elsewhere(name))

    @property
    def options(self) -> dict[str, Any]:
        return self.registration.options

    def get_web_url(self) -> str | None:
        """The URL of this web endpoint (``@rc.fastapi_endpoint``, ``@rc.asgi_app``, ``@rc.wsgi_app``) on the
        runtime's gateway, which any HTTP client on this machine can reach; None for other functions.

        Registers the function first (starting its app as a call would), so the URL serves at once.
        """
        options = self.registration.options
        is_web = ("web" in options) if self.method is None else (self.method in options.get("web_methods", {}))
        if not is_web and not isinstance(self.registration, Lookup):
            return None
        self.registration.fid()
        if self.method is not None:
            return self.registration.web_urls.get(self.method)
        return self.registration.web_url

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function here, in this process."""
        return self.raw_f(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(
            f"{self.name} is a remote function: call {self.name}.remote(...) to run it on the runtime, "
            f"or {self.name}.local(...) to run it here"
        )

    def fid(self) -> tuple[_client.Connection, str]:
        return self.registration.fid()

    def forget_registrations(self) -> None:
        self.registration.forget()

    def move_to(self, app: Any) -> None:
        """``app.include``: this function is ``app``'s now (registered there at its next call)."""
        self.app = self.registration.app = app
        self.registration.forget()

    def registrations(self) -> list[Registration]:
        return [self.registration]

    async def fid_aio(self) -> tuple[_client.Connection, str]:
        cached = self.registration.cached()
        return cached if cached is not None else await asyncio.to_thread(self.fid)

    @property
    def batching(self) -> dict[str, int] | None:
        """The ``@rc.batched`` limits of this function (or method), or None."""
        batched: dict[str, dict[str, int]] = self.options.get("batched") or {}
        return batched.get(self.method or "")

    async def _schedule(self) -> Schedule:
        """The schedule of this function in its deployed app: next run, last run, pause, resume, run now.

        >>> s = nightly.schedule()        # or rc.Function.from_name("etl", "nightly").schedule()
        >>> s.next_at, s.last["state"]
        >>> s.pause(); s.resume(); call = s.run_now()

        NotFoundError when the function has no schedule or its app is not deployed.
        """
        if self.method:
            raise InvalidError(f"{self.name} is a method: only functions have schedules")
        return await fetch(self.app.name, self.registration.name)

    async def _cache_clear(self) -> int:
        """Forget this ``cache=True`` function's cached results (every image and argument); how many went.

        >>> @app.function(cache=True)
        ... def embed(text): ...
        >>> embed.cache_clear()            # or: await embed.cache_clear.aio()
        3
        """
        cache = self.options.get("cache")
        if not isinstance(cache, dict):
            raise InvalidError(f"{self.name} has no result cache: declare it with @app.function(cache=True)")
        conn = await asyncio.to_thread(_client.connection)
        reply, _ = await conn.async_channel().roundtrip(conn.envelope(CacheClearMsg(code=cache["code"])))
        return CacheClearReply.from_wire(reply).cleared

    # -- .remote ------------------------------------------------------------------------------

    def target(self, fresh: bool = False) -> _invocation.Target:
        """What this function's calls go to now, registering it first when needed.

        ``fresh``: ask the app again rather than take the cached fid (a resend after a restart).
        """
        conn, fid = (None if fresh else self.registration.cached()) or self.fid()
        return self._target_of(conn, fid)

    def _target_of(self, conn: _client.Connection, fid: str) -> _invocation.Target:
        """The Target of ``(conn, fid)``, the last one made again while they stay (one per call costs ~1 us)."""
        target = self._last_target
        if target is None or target.conn is not conn or target.fid != fid:
            target = self._last_target = _invocation.Target(conn, fid, self.method, self.name,
                                                            cache="cache" in self.options)
        return target

    async def target_aio(self) -> _invocation.Target:
        conn, fid = await self.fid_aio()
        return self._target_of(conn, fid)

    def _remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function remotely and return its result (or raise its exception)."""
        self._check_generator(False)
        try:
            try:
                return _invocation.call(self.target(), args, kwargs)
            except _client.NotSent:  # the local runtime had crashed: started again, the app registered anew
                return _invocation.call(self.target(), args, kwargs)
        except KeyboardInterrupt:  # the pipeline cancelled it
            print(f"remotecell: interrupted; cancelled the remote call to {self.name}", file=sys.stderr)
            raise

    @functools.cached_property
    def _is_generator(self) -> bool:
        return self.registration.is_generator(self.method)

    def _check_generator(self, wanted: bool) -> None:
        is_generator = self._is_generator
        if is_generator and not wanted:
            raise InvalidError(f"{self.name} is a generator function: iterate over {self.name}.remote_gen(...) "
                               "to get its items as they are made")
        if wanted and not is_generator:
            raise InvalidError(f"{self.name} is not a generator function: call {self.name}.remote(...)")

    def _remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Run a generator function remotely; yield its items as the remote generator makes them.

        >>> @app.function()
        ... def count(n):
        ...     yield from range(n)
        >>> list(count.remote_gen(3))     # or: async for x in count.remote_gen.aio(3)
        [0, 1, 2]
        """
        self._check_generator(True)
        return _invocation.items(self.target(fresh=True), args, kwargs)

    def _remote_gen_aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._check_generator(True)
        return self._items_aio(args, kwargs)

    async def _items_aio(self, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        async for item in _invocation.items_aio(await self.target_aio(), args, kwargs):
            yield item

    async def _remote_aio(self, *args: Any, **kwargs: Any) -> Any:
        self._check_generator(False)
        return await _invocation.call_aio(await self.target_aio(), args, kwargs)

    def __repr__(self) -> str:
        return f"<rc.Function {self.app.name}.{self.name}>"

