"""Calls and how they end: inputs, results, what a running call prints or yields, leases, cancelling.

A ``call`` travels client → daemon → container as the same frames (the daemon
forwards it untouched), or client → container straight under a lease (with
its ``token``); results travel back the same way.
"""

from __future__ import annotations

from ..message import Message, message, wire
from .session import ErrorInfo
from .web import WebRequest


@message("call")
class CallMsg(Message):
    """One input of function ``fid``: its one payload is the pickled arguments."""

    id: str  # the input's id, the caller's own: a resent one runs once
    fid: str = ""  # empty on a direct call to a leased container
    method: str | None = wire("m", default=None)  # a remote class's method
    shm: bool = False  # the caller takes large results through shared memory
    gen: bool = False  # a generator: its items come back as ``item`` messages before the result
    lease: bool = False  # the caller would take a lease of the container for its next calls
    token: str | None = None  # a direct call: the lease's token, which the container checks
    web: WebRequest | None = None  # an HTTP request to a web endpoint: its one payload is the raw body


@message()
class CallEntry(Message):
    """One input of a ``calls`` message."""

    id: str
    method: str | None = wire("m", default=None)
    shm: bool = False
    gen: bool = False
    n_payloads: int = wire("np", default=1)
    web: WebRequest | None = None


@message("calls")
class CallsMsg(Message):
    """Many inputs of one function (a map's), one payload each; ``method``/``shm`` hold for every entry."""

    entries: list[CallEntry] = wire("e")
    fid: str = ""
    method: str | None = wire("m", default=None)
    shm: bool = False


@message("cancel")
class CancelMsg(Message):
    """Cancel inputs ``ids``; ``cid``: the leased container that runs them, for calls sent to it straight."""

    ids: list[str] = wire(factory=list)
    cid: str | None = None


@message("lease_return")
class LeaseReturnMsg(Message):
    """A call that went wrong under a lease (``why``: timeout, crash or error), handed to the runtime to go on."""

    id: str
    fid: str
    why: str
    cid: str = ""
    cause: str = ""
    error: ErrorInfo | None = None
    method: str | None = wire("m", default=None)
    shm: bool = False


@message()
class ResultEntry(Message):
    """How one input ended: ``status`` ok, error or cancelled; its payloads: the value, or the exception."""

    id: str
    status: str = ""
    error: ErrorInfo | None = None
    run_us: int = wire("us", default=0)  # how long it ran in its container
    attempt: int = 1
    n_payloads: int = wire("np", default=1)
    cached: bool = wire("c", default=False)  # answered from the result cache: it did not run


@message("result")
class ResultMsg(ResultEntry):
    pass


@message("results")
class ResultsMsg(Message):
    entries: list[ResultEntry] = wire("e")


@message("output")
class OutputMsg(Message):
    """What input ``id`` printed."""

    id: str
    stream: str = "stdout"
    text: str = ""


@message("item")
class ItemMsg(Message):
    """Item ``index`` a generator input yielded; its one payload is the item."""

    id: str
    index: int = wire("i")


@message("lease")
class LeaseMsg(Message):
    """A container of ``fid`` lent to the caller of input ``id``: its next calls go to ``addr`` with ``token``."""

    fid: str
    cid: str
    addr: str
    token: str
    timeout_s: float
    retries: bool = False  # the function retries: a failed call is handed back rather than raised
    id: str | None = None


@message("lease_ended")
class LeaseEndedMsg(Message):
    """The lease on ``cid`` was given up after its holder's call ``last``: the next call goes through the runtime."""

    fid: str
    cid: str
    last: str = ""


@message("lease_lost")
class LeaseLostMsg(Message):
    """The leased container died (``cause``): a call out there is handed back."""

    fid: str
    cid: str
    cause: str = ""


@message("revoked")
class RevokedMsg(Message):
    """A leased container's answer to a direct call it will not run (its lease was taken back)."""

    id: str


@message("cache_clear")
class CacheClearMsg(Message):
    """Forget the result cache's entries of one function's code (``code``: its ``CachePolicy.code``)."""

    code: str


@message("reply")
class CacheClearReply(Message):
    cleared: int  # entries dropped
