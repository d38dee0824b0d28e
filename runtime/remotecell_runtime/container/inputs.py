"""What one input of a container is, and what it came to: the types every part of the container shares.

``CURRENT`` is the input the running thread or task serves (a context variable, so
threads and asyncio tasks each see their own); what user code prints goes to that
input's caller.  An input comes to a ``Returned`` value (exceptions included, when
returned), a ``Cancelled``, or the exception it raised; ``describe_error`` turns the
last into an ``ErrorInfo`` and, when it pickles, the exception as the payload.
This module imports no other module of the container.
"""

from __future__ import annotations

import contextvars
import os
import traceback
from typing import Any

from ..protocol import pickling
from ..protocol.errors import InputCancellation
from ..protocol.framing import Payload
from ..protocol.messages.calls import CallEntry, CallMsg
from ..protocol.messages.session import ErrorInfo

_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Call = CallMsg | CallEntry  # one input: alone, or an entry of a ``calls`` message (the same fields it reads)
Work = tuple[Call, list[Payload]]  # one input: its call and its arguments

CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("remotecell_input", default=None)


class Cancelled(InputCancellation):
    """Raised inside user code when the daemon cancels the running input."""


class Returned:
    """What an input returned (any value, exceptions included, as opposed to what it raised)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Terminated(SystemExit):
    """SIGTERM: the container is being stopped; unwind and run the @exit hooks."""


async def outcome_of(awaitable: Any) -> Any:
    """What awaiting user code came to: ``Returned(value)``, ``Cancelled()``, or the exception it raised."""
    import asyncio

    try:
        return Returned(await awaitable)
    except asyncio.CancelledError:
        return Cancelled()
    except BaseException as exc:
        return exc


def type_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__qualname__


def describe_error(exc: BaseException, context: str = "") -> tuple[ErrorInfo, list[Payload]]:
    """What ``exc`` was, and the exception itself as the payload when it pickles."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = f"{context}: {exc}" if context else str(exc)
    frames = [
        [f.filename, f.lineno, f.name, f.line or ""]
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(_RUNTIME_DIR)
    ]
    error = ErrorInfo(type=type_name(exc), message=message, traceback=tb, frames=frames)
    exc.__traceback__ = None
    try:
        return error, [pickling.serialize(exc)]
    except BaseException:  # an unpicklable exception travels as its text
        return error, []
