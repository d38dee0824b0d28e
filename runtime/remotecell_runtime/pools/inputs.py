"""What flows through a pool: a function's definition, its inputs, and how each one ended.

Invariants: an ``Input`` belongs to at most one pool and, at any time, to at most one
place in it (the queue, a batcher, a container); a ``Result`` is sent to its caller
at most once (``Pool.finish``).  Payload frames are never unpickled here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import framing
from ..protocol.framing import Frame, Payload
from ..protocol.messages.calls import CallEntry, ResultEntry, ResultsMsg
from ..protocol.messages.session import ErrorInfo
from ..protocol.messages.web import WebRequest
from ..protocol.options import FunctionOptions

if TYPE_CHECKING:
    from ..containers import ContainerRecord

Peer = tuple[Any, bytes]  # (socket, identity): where a caller's replies go


@dataclass
class FunctionDef:
    fid: str
    app_id: str
    name: str
    options: dict[str, Any]
    body: Payload
    key: str = ""  # the same definition from the same client and app, across runtime restarts
    env: dict[str, str] = field(default_factory=dict)  # its containers' variables: env= and its secrets
    meta: dict[str, Any] = field(default_factory=dict)  # what its client said of it: generators, methods
    opts: FunctionOptions = field(init=False)  # ``options`` read once: code uses these fields, never the dict

    def __post_init__(self) -> None:
        self.opts = FunctionOptions.from_wire(self.options)

    @property
    def timeout_s(self) -> float:
        return self.opts.timeout_s

    def retry_delay_s(self, attempt: int) -> float | None:
        """Seconds before the next try after failed ``attempt``, or None when the budget is spent."""
        return self.opts.retries.delay_s(attempt)


@dataclass
class Input:
    id: str
    peer: Peer
    payload: Payload
    frames: list[Frame] | None = None  # the caller's one-call message, forwarded as it came when sent alone
    method: str | None = None
    shm: bool = False  # the caller takes large results through shared memory
    queued_at: float = field(default_factory=time.monotonic)
    container: ContainerRecord | None = None
    deadline: float = 0.0  # event-loop time at which this attempt times out
    attempt: int = 1  # user errors and timeouts count; container losses do not
    crashes: int = 0
    suspect: bool = False  # a container died while it ran beside others: it runs alone until one dies under it
    lease: str | None = None  # the caller's session, when it would take a lease of the container
    called_as: str | None = None  # the superseded fid its caller holds (a redeployed app), when not ours
    gen: bool = False  # a generator's: its items come back before its result
    web: WebRequest | None = None  # an HTTP request to a web endpoint (its payload: the raw body)
    affinity: str | None = None  # a session key: inputs with the same one go to the same container (best effort)
    cache_key: str | None = None  # a cache=True function's call missed the result cache: its result goes there

    def entry(self) -> tuple[dict[str, Any], list[Payload]]:
        """This input as one entry of a ``calls`` message (with several others, not forwarded as it came)."""
        return (CallEntry(id=self.id, method=self.method, shm=self.shm, gen=self.gen, web=self.web).fields(),
                [self.payload])


class ResultMessage:
    """A container's ``results`` message: sent on whole when all of it goes to one caller, split only if needed.

    ``header`` is the decoded header, kept only for where the payloads are (``p``, ``pk``).
    """

    def __init__(self, msg: ResultsMsg, header: dict[str, Any], frames: list[Frame]) -> None:
        self.entries = msg.entries
        self.header = header
        self.frames = frames
        if sum(e.n_payloads for e in self.entries) != len(header.get("p") or []):
            raise framing.WireError("a results message whose entries do not match its payloads")
        self._split: list[list[Payload]] | None = None

    def payloads(self, index: int) -> list[Payload]:
        if self._split is None:
            payloads = framing.split_payloads(self.header, self.frames[2:])
            self._split = [own for _, own in framing.pair(self.entries, payloads)]
        return self._split[index]

    def results(self) -> list[Result]:
        return [Result(entry, source=self, index=i) for i, entry in enumerate(self.entries)]


class Result:
    """How one input ended: its entry (id, status, error, attempt) and payloads."""

    __slots__ = ("entry", "_payloads", "frames", "source", "index")

    def __init__(self, entry: ResultEntry, payloads: list[Payload] | None = None,
                 frames: list[Frame] | None = None, source: ResultMessage | None = None, index: int = 0) -> None:
        self.entry = entry
        self._payloads = payloads
        self.frames = frames  # the container's own one-result message: forwarded untouched
        self.source = source  # or the many-results message it came in
        self.index = index

    @property
    def payloads(self) -> list[Payload]:
        if self._payloads is None:
            self._payloads = self.source.payloads(self.index) if self.source is not None else []
        return self._payloads

    @property
    def status(self) -> str:
        return self.entry.status

    def wire_entry(self) -> tuple[dict[str, Any], list[Payload]]:
        """This result as one entry of a ``results`` message."""
        return self.entry.fields(), self.payloads


def error_result(input_id: str, type_name: str, message: str) -> Result:
    """A result made by the runtime itself: the error travels by name, nothing pickled."""
    return failed_result(input_id, ErrorInfo(type=str(type_name), message=message))


def failed_result(input_id: str, error: ErrorInfo, payloads: list[Payload] | None = None) -> Result:
    return Result(ResultEntry(id=input_id, status="error", error=error), payloads)


def cancelled_result(input_id: str) -> Result:
    return Result(ResultEntry(id=input_id, status="cancelled"))
