"""What a service and the daemon agree on: requests, refusals, handler tables and the ``Host``.

A service owns one kind of work (calls, spawned jobs, Dict/Queue, ...) and
registers its handlers: ``handlers()`` maps client message classes (see
``protocol.messages``) to handlers, ``container_handlers()`` container message
classes.  The daemon reads each message as the class of its type and routes it
to that class's one handler; a handler answers with a reply message (the
daemon adds ``id``), or ``None`` when it answers later or itself, or raises
``RequestError`` (made with ``refusal``), which the daemon sends back as an
``error`` by name.  Services reach the daemon only through ``Host``; no service
imports the daemon.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Frame, Payload
from ..protocol.message import Message
from ..protocol.messages.session import ErrorInfo, ErrorReply

if TYPE_CHECKING:
    from ..containers import ContainerRecord
    from ..pools import Peer


M = TypeVar("M", bound=Message)


@dataclass(slots=True)
class Request(Generic[M]):
    """One client message: who sent it, the message, its envelope (``id``, ``sid``), payloads and raw frames."""

    peer: Peer
    msg: M
    id: Any  # the request's id: its reply carries it
    sid: str  # the sender's session ("" when it said none)
    payloads: list[Payload]
    frames: list[Frame]  # without the routing identity: ready to forward


@dataclass(slots=True)
class Report(Generic[M]):
    """One container message: the message and its frames (header first: to forward, or to split)."""

    msg: M
    header: dict[str, Any]  # the decoded header, for framing only: where the payloads are (``p``, ``pk``)
    frames: list[Frame]

    def payloads(self) -> list[Payload]:
        return framing.split_payloads(self.header, self.frames[2:])


class RequestError(Exception):
    """A request the runtime refuses; travels back by name (``type_name``) with its message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def refusal(name: ErrorName, message: str) -> RequestError:
    """The error a handler raises to refuse a request: ``name`` tells the client which exception it is."""
    return RequestError(name, message)


def error_reply(request_id: Any, name: ErrorName | str, message: str) -> list[Frame]:
    """The ``error`` message that answers request ``request_id``: the client raises the exception ``name``."""
    return framing.encode(with_id(ErrorReply(error=ErrorInfo(type=str(name), message=message)), request_id))


def with_id(reply: Message, request_id: Any) -> dict[str, Any]:
    """The header of ``reply`` to request ``request_id``."""
    header = reply.to_wire()
    header["id"] = request_id
    return header


# A handler is typed for its own message class (``Request[CallMsg]``); tables hold them all.
Handler = Callable[[Request[Any]], "Message | None"]
ContainerHandler = Callable[["ContainerRecord", Report[Any]], None]


class Host(Protocol):
    """What services need from the daemon: where state lives, who is connected, and sending."""

    state_dir: Path
    runtime_id: str
    # True while the daemon handles the messages of one read of a socket: each service's ``drained``
    # follows, so what a handler changes then need not be written back any other way
    reading: bool

    @property
    def endpoints(self) -> list[str]: ...

    def live_sessions(self) -> set[str]: ...

    def send_peer(self, peer: Peer, frames: list[Frame]) -> None: ...

    def send_container(self, cid: str, frames: list[Frame]) -> None: ...

    def stop(self) -> None: ...


class Service:
    """A unit of the runtime's work; every hook defaults to nothing."""

    def handlers(self) -> dict[type[Message], Handler]:
        return {}

    def container_handlers(self) -> dict[type[Message], ContainerHandler]:
        return {}

    tick_every_s = 0.5

    def tick(self, now: float) -> None:
        """Periodic work, about every ``tick_every_s`` on the daemon's loop (``now``: monotonic seconds)."""

    def drained(self) -> None:
        """The daemon handled every message that one read of a socket brought: a moment to write what they
        changed, together, before the loop turns (called often: return at once when there is nothing)."""

    def session_ended(self, sid: str) -> None:
        """A client session stopped sending heartbeats."""

    def close(self) -> None:
        """The runtime is stopping: save what must be saved, stop timers."""


# What ``answer_later`` runs: a reply, or a reply and its payloads.
Work = Callable[[], "Message | tuple[Message, list[Payload]]"]


def answer_later(host: Host, req: Request[Any], work: Work, failed: str) -> None:
    """Run ``work`` on a worker thread (disk work the loop must not wait for) and answer ``req`` with what it
    returns; a ``RequestError`` it raises is the answer too, any other error is refused as ``failed: error``."""
    done = asyncio.get_running_loop().run_in_executor(None, work)
    done.add_done_callback(functools.partial(_answer, host, req, failed))


def _answer(host: Host, req: Request[Any], failed: str, done: asyncio.Future[Any]) -> None:
    if done.cancelled():  # the runtime is closing
        return
    exc = done.exception()
    if exc is None:
        result = done.result()
        reply, payloads = result if isinstance(result, tuple) else (result, [])
        host.send_peer(req.peer, framing.encode(with_id(reply, req.id), payloads))
    elif isinstance(exc, RequestError):
        host.send_peer(req.peer, error_reply(req.id, exc.type_name, str(exc)))
    else:
        host.send_peer(req.peer, error_reply(req.id, ErrorName.INVALID, f"{failed}: {exc}"))
