"""Apps and the functions registered in them, deployed lookups, schedules (volumes: ``volumes``)."""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire


@message("app_create")
class AppCreateMsg(Message):
    """A new app (its envelope's ``sid`` owns an ephemeral one); a deployed one by name is made once.

    ``functions``: on a redeploy, the functions it keeps (the others are dropped).
    """

    name: str
    mode: str = "ephemeral"
    functions: list[str] | None = None


@message("reply")
class AppCreateReply(Message):
    app_id: str


@message("app_stop")
class AppStopMsg(Message):
    """Stop an app by ``app_id``, or a deployed one by ``name``.

    ``detach``: not now, but once its inputs (spawned calls included) are done; it outlives its client meanwhile.
    """

    app_id: str | None = None
    name: str | None = None
    detach: bool = False


@message("app_logs")
class AppLogsMsg(Message):
    """What the inputs of app ``app`` (its id, or its name: the deployed one, else the latest) printed after
    entry ``after``; ``wait_s``: wait that long for some when there are none yet."""

    app: str
    after: int = 0
    wait_s: float = 0.0
    unsent_only: bool = False  # only what went to no caller: spawned calls', schedules' (rc.enable_output)


@message("reply")
class AppLogsReply(Message):
    entries: list[list[str]]  # [function name, text, input id], oldest first
    next: int  # the ``after`` of the next request
    live: bool  # the app still runs (a follower stops once it does not)


@message("fn_register")
class FnRegisterMsg(Message):
    """A function or class of app ``app_id``; its one payload is its body, which the daemon never unpickles."""

    app_id: str
    name: str
    options: dict[str, Any] = wire(factory=dict)
    meta: dict[str, Any] | None = None


@message("reply")
class FnRegisterReply(Message):
    fid: str
    web_url: str | None = None  # a web endpoint's URL on this runtime's gateway
    web_urls: dict[str, Any] = wire(factory=dict)  # a class's web methods: method name -> URL


@message("fn_lookup")
class FnLookupMsg(Message):
    """A deployed function or class by its app's name and its own."""

    app: str
    name: str


@message("reply")
class FnLookupReply(Message):
    fid: str
    options: dict[str, Any]
    meta: dict[str, Any]
    web_url: str | None = None
    web_urls: dict[str, Any] = wire(factory=dict)


@message("fn_variant")
class FnVariantMsg(Message):
    """A variant of deployed class ``name`` (Modal's ``Cls.from_name(...).with_options(...)``): registered in the
    app as ``name.variant`` from the class's definition with ``options`` over its own (a None value drops that
    option); answered as ``fn_lookup`` is. The same request again finds the same definition."""

    app: str
    name: str
    variant: str
    options: dict[str, Any] = wire(factory=dict)


@message("fn_autoscaler")
class FnAutoscalerMsg(Message):
    """Change a live function's autoscaler (Modal's ``update_autoscaler``); a field left None keeps its value.

    It holds until the function is registered again (a redeploy resets it to the decorator's values).
    """

    fid: str
    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window_s: float | None = None


@message("reply")
class FnAutoscalerReply(Message):
    """The function's autoscaler settings after the change."""

    min_containers: int
    max_containers: int
    buffer_containers: int
    scaledown_window_s: float


@message()
class ScheduleRef(Message):
    """Which schedule: a deployed app's name and its function's."""

    app: str
    name: str


@message("schedule_list")
class ScheduleListMsg(Message):
    app: str | None = None  # None: every app's


@message("schedule_get")
class ScheduleGetMsg(ScheduleRef):
    pass


@message("schedule_pause")
class SchedulePauseMsg(ScheduleRef):
    pass


@message("schedule_resume")
class ScheduleResumeMsg(ScheduleRef):
    pass


@message("schedule_run")
class ScheduleRunMsg(ScheduleRef):
    """Run it now; ``call`` is the client's own call id, so a resent request runs once."""

    call: str | None = None


@message("reply")
class ScheduleReply(Message):
    """A schedule as a client shows it: its spec, the next slot, the last run and the recent fires."""

    app: str
    function: str
    spec: dict[str, Any]
    description: str
    paused: bool
    next_at: float | None
    last: dict[str, Any] | None
    fires: list[dict[str, Any]]
    call_id: str | None = None  # after schedule_run: the call it started


@message("reply")
class ScheduleListReply(Message):
    schedules: list[ScheduleReply]
