"""One small bridge between blocking and async: every blocking method gets an `.aio` twin.

`run(coro)` runs a coroutine to completion from blocking code: on a private
event loop of this thread when none is running here, else (inside Jupyter,
whose loop is already running in this thread) on a background loop thread,
so no one calls `asyncio.run` inside a kernel.  `twin(sync, async_)` makes the
callable that users see: ``f.remote(x)`` and ``await f.remote.aio(x)``;
`twin_iterator` (``for x in v.iterdir()`` / ``async for x in v.iterdir.aio()``) and
`twin_context` (``with v.batch_upload() as b`` / ``async with v.batch_upload.aio() as b``)
the same for async generators and async context managers.

Invariants: at most ``MAX_PRIVATE_LOOPS`` private loops live at once (threads
past that run on the background loop), and a private loop is closed when its
thread ends; whoever keeps something per loop (the connection's channel and
socket) hears of it through ``when_loop_closes``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

T = TypeVar("T")

# Each private loop costs a socket of the connection (its channel) and the loop's own fds.
MAX_PRIVATE_LOOPS = 64

_local = threading.local()
_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()
_private_loops = 0  # live ones, under _background_lock
_loop_watchers: list[weakref.WeakMethod[Callable[[asyncio.AbstractEventLoop], None]]] = []


class _LoopSlot:
    """A thread's private loop, in that thread's local storage: it goes when the thread ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop


def when_loop_closes(watcher: Callable[[asyncio.AbstractEventLoop], None]) -> None:
    """Have the bound method ``watcher`` called with each private loop closed because its thread ended."""
    _loop_watchers.append(weakref.WeakMethod(watcher))


def _private_loop() -> asyncio.AbstractEventLoop | None:
    """This thread's private loop; None when ``MAX_PRIVATE_LOOPS`` other threads have one."""
    global _private_loops
    slot = getattr(_local, "slot", None)
    if slot is not None and not slot.loop.is_closed():
        return slot.loop
    with _background_lock:
        if _private_loops >= MAX_PRIVATE_LOOPS:
            return None
        _private_loops += 1
    loop = asyncio.new_event_loop()
    _local.slot = slot = _LoopSlot(loop)
    weakref.finalize(slot, _close_private_loop, loop)
    return loop


def _close_private_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Its thread ended: tell the watchers, then close it (its selector and self-pipe fds)."""
    global _private_loops
    with _background_lock:
        _private_loops -= 1
    for ref in list(_loop_watchers):
        watcher = ref()
        if watcher is None:
            _loop_watchers.remove(ref)
        else:
            watcher(loop)
    if not loop.is_running():
        loop.close()


def background_loop() -> asyncio.AbstractEventLoop:
    global _background
    with _background_lock:
        if _background is None:
            _background = asyncio.new_event_loop()
            threading.Thread(target=_background.run_forever, name="remotecell-bridge", daemon=True).start()
        return _background


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from blocking code, wherever that code runs."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = _private_loop()
        if loop is None:
            return run_in_background(coro)
        task = loop.create_task(coro)
        try:
            return loop.run_until_complete(task)
        except KeyboardInterrupt:
            task.cancel()  # let the coroutine cancel what it started remotely
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
            raise
    return run_in_background(coro)


def run_in_background(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` as a task of the background loop, in a copy of the caller's context.

    On Ctrl-C the task is cancelled and awaited (up to 5 s), so that what it
    started remotely is cancelled before the interrupt goes on; a cancelled
    concurrent future would return at once instead.
    """
    loop = background_loop()
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:  # call_soon_threadsafe runs it in a copy of the caller's context
        task = loop.create_task(coro)
        tasks.append(task)
        task.add_done_callback(lambda t: _settle(outcome, t))

    loop.call_soon_threadsafe(start)
    try:
        return outcome.result()
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(lambda: tasks[0].cancel())  # after start(): callbacks run in order
        try:
            outcome.result(timeout=5)
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):
            pass
        raise


def _settle(outcome: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
    if task.cancelled():
        outcome.cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())
    else:
        outcome.set_result(task.result())


def iterate(results: AsyncIterator[T], runner: Callable[[Coroutine[Any, Any, Any]], Any] = run,
            ) -> Generator[T, None, None]:
    """A blocking iterator over an async one, one ``runner`` (``run``) per item; closing it closes the source."""
    try:
        while True:
            try:
                yield runner(results.__anext__())  # type: ignore[arg-type]
            except StopAsyncIteration:
                return
    finally:
        runner(results.aclose())  # type: ignore[attr-defined]


@contextlib.contextmanager
def blocking_context(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """``with`` over an async context manager, each of its halves through ``run``; an exception in the block
    reaches its ``__aexit__`` (which may swallow it), as ``async with`` would pass it."""
    value = run(manager.__aenter__())
    try:
        yield value
    except BaseException:
        if not run(manager.__aexit__(*sys.exc_info())):
            raise
    else:
        run(manager.__aexit__(None, None, None))


class Twin:
    """A blocking callable with its async twin at ``.aio``."""

    def __init__(self, sync: Callable[..., Any], async_: Callable[..., Any], doc: str | None = None) -> None:
        """``async_`` returns what ``await``, ``async for`` or ``async with`` takes, as ``sync``'s twin."""
        self._sync = sync
        self.aio = async_
        self.__doc__ = doc or sync.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._sync(*args, **kwargs)


def twin(async_: Callable[..., Coroutine[Any, Any, Any]], sync: Callable[..., Any] | None = None) -> Twin:
    """``sync`` defaults to running ``async_`` through the bridge."""
    if sync is None:
        def sync(*args: Any, **kwargs: Any) -> Any:
            return run(async_(*args, **kwargs))
    return Twin(sync, async_, async_.__doc__)


def twin_iterator(async_: Callable[..., AsyncIterator[Any]]) -> Twin:
    """The blocking form iterates the async generator ``async_`` makes, one ``run`` per item."""
    return Twin(lambda *args, **kwargs: iterate(async_(*args, **kwargs)), async_, async_.__doc__)


def twin_context(async_: Callable[..., AbstractAsyncContextManager[Any]]) -> Twin:
    """The blocking form enters and leaves the async context manager ``async_`` makes through ``run``."""
    return Twin(lambda *args, **kwargs: blocking_context(async_(*args, **kwargs)), async_, async_.__doc__)


class TwinMethod:
    """``get = TwinMethod(_get)`` in a class body: ``obj.get`` is ``twin(obj._get)``, made on first use
    (``make``: ``twin_iterator`` or ``twin_context`` for an async generator or context manager method).

    A handle made in a hot loop (one per ``f.spawn``) then pays nothing for the forms it never uses.
    """

    def __init__(self, async_: Callable[..., Any], make: Callable[[Callable[..., Any]], Twin] = twin) -> None:
        self.async_ = async_
        self.make = make
        self.__doc__ = async_.__doc__
        self.name = async_.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        made = obj.__dict__[self.name] = self.make(self.async_.__get__(obj, owner))  # later lookups find it there
        return made
