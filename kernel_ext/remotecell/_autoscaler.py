"""``update_autoscaler`` of a function or a class instance: its live pool's autoscaler changes at once.

>>> f = rc.Function.from_name("demo", "square")
>>> f.update_autoscaler(min_containers=2, buffer_containers=1)
FunctionAutoscalerSettings(min_containers=2, max_containers=100, scaledown_window=60, buffer_containers=1)

The change holds until the function is registered again (a redeploy resets it to the decorator's values,
as in Modal); an ephemeral app's function is registered first if it is not yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from remotecell_runtime.protocol.messages.apps import FnAutoscalerMsg, FnAutoscalerReply

from . import _client
from .exceptions import InvalidError
from .options import check_range


@dataclass(frozen=True)
class FunctionAutoscalerSettings:
    """A function's autoscaler settings after ``update_autoscaler`` (Modal's ``modal.types`` dataclass)."""

    min_containers: int | None
    max_containers: int | None
    scaledown_window: int | None
    buffer_containers: int | None


FidAio = Callable[[], Awaitable[tuple[_client.Connection, str]]]


async def update_autoscaler(name: str, fid_aio: FidAio, *, min_containers: int | None = None,
                            max_containers: int | None = None, buffer_containers: int | None = None,
                            scaledown_window: int | None = None) -> FunctionAutoscalerSettings:
    """Override ``name``'s autoscaler now; an argument left None keeps its current value."""
    try:
        for option, value, low in (("min_containers", min_containers, 0), ("max_containers", max_containers, 1),
                                   ("buffer_containers", buffer_containers, 0)):
            if value is not None:
                check_range(option, value, low, 1000)
        if scaledown_window is not None:
            check_range("scaledown_window", scaledown_window, 2, 3600, float)
    except InvalidError as exc:
        raise InvalidError(f"{name}.update_autoscaler: {exc}") from None
    conn, fid = await fid_aio()
    msg = FnAutoscalerMsg(fid=fid, min_containers=min_containers, max_containers=max_containers,
                          buffer_containers=buffer_containers,
                          scaledown_window_s=None if scaledown_window is None else float(scaledown_window))
    reply, _ = await conn.ask_aio(msg, FnAutoscalerReply)
    return FunctionAutoscalerSettings(min_containers=reply.min_containers, max_containers=reply.max_containers,
                                      scaledown_window=round(reply.scaledown_window_s),
                                      buffer_containers=reply.buffer_containers)
