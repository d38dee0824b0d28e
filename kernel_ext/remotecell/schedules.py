"""The schedules of deployed functions: their state, pause, resume and run now.

A function deployed with ``schedule=rc.Cron(...)`` or ``rc.Period(...)`` is fired
by the runtime as a spawned call; ``f.schedule()`` says what its schedule did
and will do, from any process (``rc.Function.from_name`` handles too).

>>> s = nightly.schedule()          # or: await nightly.schedule.aio()
>>> s.next_at, s.last["state"]      # the next slot (epoch s), the last run's state
>>> s.pause(); s.resume()           # each with .aio
>>> call = s.run_now()              # a FunctionCall: call.get(), call.logs()
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from remotecell_runtime.protocol.messages.apps import (
    ScheduleGetMsg,
    ScheduleListMsg,
    ScheduleListReply,
    SchedulePauseMsg,
    ScheduleRef,
    ScheduleReply,
    ScheduleResumeMsg,
    ScheduleRunMsg,
)

from . import _views, calls
from ._bridge import twin


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")


def _from_now(epoch_s: float) -> str:
    delta_s = epoch_s - time.time()
    return f"in {delta_s:.1f} s" if delta_s < 120 else f"in {delta_s / 60:.0f} min"


class Schedule:
    """One deployed function's schedule, as the runtime last told it (``refresh()`` asks again).

    >>> s = rc.Function.from_name("etl", "nightly").schedule()
    >>> s
    nightly in etl: cron '0 3 * * *' (Europe/Berlin); next 2026-11-28 03:00:00 (in 1234 min); last fc-1f.. ...
    >>> s.pause().paused
    True

    ``state`` is the runtime's answer: ``spec``, ``paused``, ``next_at`` (wall-clock
    epoch seconds, None while paused), ``last`` (``call_id``, ``at``, ``trigger``:
    ``schedule`` or ``run_now``, and the call's ``state``) and ``fires``, the recent
    slots (``slot``, ``outcome``: ``spawned`` or why it was skipped, ``call_id``).
    """

    def __init__(self, app_name: str, function_name: str, state: dict[str, Any]) -> None:
        self.app_name = app_name
        self.function_name = function_name
        self.state = state
        self.refresh = twin(self._refresh)
        self.pause = twin(self._pause)
        self.resume = twin(self._resume)
        self.run_now = twin(self._run_now)

    @property
    def paused(self) -> bool:
        return bool(self.state.get("paused"))

    @property
    def next_at(self) -> float | None:
        return self.state.get("next_at")

    @property
    def last(self) -> dict[str, Any] | None:
        return self.state.get("last")

    @property
    def fires(self) -> list[dict[str, Any]]:
        return list(self.state.get("fires") or [])

    async def _ask(self, kind: type[ScheduleRef], **fields: Any) -> dict[str, Any]:
        reply, _ = await calls._request(kind(app=self.app_name, name=self.function_name, **fields))
        self.state = ScheduleReply.from_wire(reply).fields()
        return self.state

    async def _refresh(self) -> Schedule:
        """Ask the runtime again; returns this object."""
        await self._ask(ScheduleGetMsg)
        return self

    async def _pause(self) -> Schedule:
        """No more slots fire until ``resume()``; a run in progress goes on."""
        await self._ask(SchedulePauseMsg)
        return self

    async def _resume(self) -> Schedule:
        """Slots fire again, the next one counted from now (missed ones while paused do not run)."""
        await self._ask(ScheduleResumeMsg)
        return self

    async def _run_now(self) -> calls.FunctionCall:
        """Run the function now as a spawned call, whatever its slots (also while paused)."""
        call_id = calls.new_call_id()  # made here: a request sent again after a reconnect runs once
        await self._ask(ScheduleRunMsg, call=call_id)
        return calls.FunctionCall(call_id, self.function_name)

    def upcoming(self) -> str:
        """``next 2026-11-28 03:00:00 (in 1234 min)``, or ``paused``."""
        if self.paused:
            return "paused"
        if self.next_at is None:
            return "no next run"
        return f"next {_when(self.next_at)} ({_from_now(self.next_at)})"

    def text(self) -> str:
        """One line: what, when next, the last run."""
        line = f"{self.function_name} in {self.app_name}: {self.state.get('description', '?')}; {self.upcoming()}"
        last = self.last
        if last is None:
            return line + "; not run yet"
        return line + f"; last {last['call_id']} at {_when(last.get('at'))} ({last.get('trigger')}): {last['state']}"

    def __repr__(self) -> str:
        return self.text()

    def _ipython_display_(self) -> None:
        """In a notebook: a live view (next run, last result, Pause/Resume, Run now); elsewhere the text."""
        _views.show(self)


async def fetch(app_name: str, function_name: str) -> Schedule:
    """The schedule of ``function_name`` in deployed app ``app_name``; NotFoundError if it has none."""
    schedule = Schedule(app_name, function_name, {})
    return await schedule._refresh()


async def _list(app_name: str | None = None) -> list[Schedule]:
    """The schedules on the runtime (of one deployed app, or all)."""
    reply, _ = await calls._request(ScheduleListMsg(app=app_name or None))
    return [Schedule(s.app, s.function, s.fields()) for s in ScheduleListReply.from_wire(reply).schedules]


list_schedules = twin(_list)
