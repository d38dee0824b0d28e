"""Saying that a result came from the result cache (``@app.function(cache=True)``).

A cached result arrives flagged (``ResultEntry.cached``). In a notebook kernel, or
in a script with ``rc.enable_output()`` on, one line on stderr says so:
``remotecell: square: result from the cache (it did not run)``; a map says it once,
with its count, when it ends. Elsewhere nothing is printed. No IPython here: a
kernel is recognized by ``ipykernel`` being imported.

Example::

    _cache_note.expect(input_id, "square")     # a cache=True call goes out
    _cache_note.seen(header)                   # its result came: noted if it was cached
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

KEPT = 100_000  # names of cache=True calls in flight kept at most (a cancelled one never answers)
_names: dict[str, str] = {}  # input id -> function name, for cache=True calls in flight
_maps: dict[str, list[int]] = {}  # function name -> hits counted by a map of it running now
_lock = threading.Lock()
# the hits heard by the caller's ``quiet`` block (a context variable: a call's task runs in a copy of its caller's
# context, on the thread's private loop or the background one)
_heard: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("remotecell_cache_heard", default=None)
pending = False  # whether any cache=True call went out (``_client.result_value`` looks only then)


def _off() -> bool:
    return False


output_enabled: Callable[[], bool] = _off  # whether ``rc.enable_output()`` is on (``_client`` sets it)


def expect(input_id: str, name: str) -> None:
    """A call of ``cache=True`` function ``name`` went out as ``input_id``."""
    global pending
    pending = True
    with _lock:
        _names[input_id] = name
        if len(_names) > KEPT:
            del _names[next(iter(_names))]


def seen(header: dict[str, Any], name: str | None = None) -> None:
    """A result came (its header): say so when it came from the cache."""
    with _lock:
        name = _names.pop(str(header.get("id", "")), None) or name
    if header.get("c") and name is not None:
        hit(name)


def hit(name: str) -> None:
    """One result of ``name`` came from the cache: heard by the caller's ``quiet`` block, counted by its running
    map, else said now."""
    heard = _heard.get()
    if heard is not None:
        heard.append(name)
        return
    with _lock:
        counter = _maps.get(name)
        if counter is not None:
            counter[0] += 1
            return
    say(f"{name}: result from the cache (it did not run)")


@contextlib.contextmanager
def quiet() -> Iterator[list[str]]:
    """The hits of calls made inside the block are only listed (a call view says it in its own outcome)."""
    heard: list[str] = []
    token = _heard.set(heard)
    try:
        yield heard
    finally:
        _heard.reset(token)


@contextlib.contextmanager
def collecting(name: str) -> Iterator[None]:
    """While a map of ``name`` runs, its hits are counted, then said in one line."""
    with _lock:
        mine = _maps.get(name) is None
        if mine:
            _maps[name] = [0]
    try:
        yield
    finally:
        if mine:
            with _lock:
                count = _maps.pop(name, [0])[0]
            if count:
                say(f"{name}.map: {count} result{'s' if count != 1 else ''} from the cache (not run again)")


def shown() -> bool:
    """Whether notes are printed: in a notebook kernel, or with ``rc.enable_output()`` on."""
    return "ipykernel" in sys.modules or output_enabled()


def say(text: str) -> None:
    if shown():
        print(f"remotecell: {text}", file=sys.stderr, flush=True)
