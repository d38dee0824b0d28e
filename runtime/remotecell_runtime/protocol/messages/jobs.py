"""Spawned calls: writing them to the job store, and what their handles ask about them."""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire


@message()
class SpawnEntry(Message):
    """One spawned call: its id (the client's, so a resent one runs once), its group and place in a spawn_map."""

    id: str
    group: str | None = wire("g", default=None)
    index: int | None = wire("i", default=None)
    n_payloads: int = wire("np", default=1)


@message("spawn")
class SpawnMsg(Message):
    """Calls of function ``fid`` to save and run, one payload (their arguments) each; answered once committed."""

    fid: str
    method: str | None = wire("m", default=None)
    entries: list[SpawnEntry] = wire("e")


@message("reply")
class SpawnReply(Message):
    accepted: int


@message("call_get")
class CallGetMsg(Message):
    """The result of spawned call ``call`` (answered as a ``result``), or ``pending`` after ``timeout_s``."""

    call: str
    timeout_s: float = 0.0


@message("reply")
class PendingReply(Message):
    pending: bool = True


@message("call_status")
class CallStatusMsg(Message):
    """The state of one call, or the counts of a group's (``group``: a spawn_map's id)."""

    call: str | None = None
    group: str | None = None


@message("reply")
class CallStatusReply(Message):
    id: str
    function: str
    state: str
    attempts: int
    created_at: float | None = None
    reason: str | None = None
    container: str | None = None
    error_type: str | None = None
    finished_at: float | None = None


@message("reply")
class GroupStatusReply(Message):
    counts: dict[str, int]


@message("call_cancel")
class CallCancelMsg(Message):
    calls: list[str] = wire(factory=list)
    group: str | None = None


@message("reply")
class CallCancelReply(Message):
    cancelled: int


@message("call_logs")
class CallLogsMsg(Message):
    call: str


@message("reply")
class CallLogsReply(Message):
    text: str


@message("calls_recent")
class CallsRecentMsg(Message):
    """The latest spawned calls, newest first: at most ``limit``, and none made before ``since`` (Unix time)."""

    limit: int = 50
    since: float | None = None


@message("reply")
class CallsRecentReply(Message):
    calls: list[dict[str, Any]]
