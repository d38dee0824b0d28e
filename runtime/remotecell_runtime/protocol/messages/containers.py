"""What a container and the daemon say to each other (calls and results are in `calls`)."""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire
from .session import ErrorInfo


@message("hello")
class ContainerHelloMsg(Message):
    """A new container: who it is; the daemon answers with ``load``."""

    cid: str
    pid: int


@message("load")
class LoadMsg(Message):
    """The function to load (its one payload) and its options; ``env``: variables to set first (those of a
    container on another host, which its backend could not hand over safely)."""

    fid: str
    options: dict[str, Any] = wire(factory=dict)
    env: dict[str, str] = wire(factory=dict)


@message("ready")
class ReadyMsg(Message):
    """Loaded; ``direct``: the address leased callers reach it at, when it takes direct calls."""

    direct: str | None = None


@message("load_failed")
class LoadFailedMsg(Message):
    """Loading failed: ``error`` says how, its payloads hold the exception."""

    error: ErrorInfo


@message("batch")
class BatchMsg(Message):
    """One batch of a ``@batched`` function: inputs ``ids``, one payload each; ``shm``: each caller's flag."""

    id: str
    ids: list[str]
    shm: list[bool] = wire(factory=list)
    method: str | None = wire("m", default=None)


@message("cancel")
class CancelInputMsg(Message):
    """Interrupt input ``id`` where it runs."""

    id: str


@message("lease")
class LeaseTokenMsg(Message):
    """This container is lent out: take direct calls that carry ``token``."""

    token: str


@message("revoke")
class RevokeMsg(Message):
    """Take no more direct calls; say ``released`` once the one running (if any) is done."""


@message("released")
class ReleasedMsg(Message):
    """The lease is given up, after the holder's call ``last``; idle ``idle_s`` since it ended."""

    idle_s: float = 0.0
    last: str = ""


@message("lease_used")
class LeaseUsedMsg(Message):
    """Direct calls run under the lease so far: how many, and their time in µs (for the pool's stats)."""

    n: int = 0
    us: int = 0


@message("stop")
class StopMsg(Message):
    """Run the exit hooks and exit."""
