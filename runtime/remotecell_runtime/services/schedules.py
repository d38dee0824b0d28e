"""Schedules of deployed functions: when each fires next, firing it as a spawned call, and what it did.

A function deployed with ``schedule=`` has one row in ``schedules`` (in
``deployed.db``, beside its definition): its spec, paused or not, the
wall-clock time of its next slot, and its last run (call id, time, trigger;
the run's outcome is that call's state in the job store).  Each slot that
comes due gets a row in ``schedule_fires`` (primary key: schedule and slot)
*before* its call is spawned, so a slot fires at most once, also across a
restart.  A slot whose previous run is still queued or running is recorded as
skipped (the overlap policy is skip).

After downtime the stored next slot is in the past: it fires once at start and
the next slot is counted from then, so a missed schedule runs once, not once
per missed slot.

One asyncio timer waits for the nearest slot.  Slots are wall-clock times; the
timer is a duration (the loop's monotonic clock), so on waking the wall clock
is read again and an early wake (the clock was set back) just waits again.  A
wait is at most ``MAX_SLEEP_S`` so that a wall clock stepped forward is noticed.

A scheduled call's arguments are ``((), {})``, pickled here once: the daemon
pickles that constant and never unpickles anything.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..pools import Pool
from ..protocol import ids
from ..protocol.errors import ErrorName
from ..protocol.message import Message
from ..protocol.messages.apps import (
    ScheduleGetMsg,
    ScheduleListMsg,
    ScheduleListReply,
    SchedulePauseMsg,
    ScheduleRef,
    ScheduleReply,
    ScheduleResumeMsg,
    ScheduleRunMsg,
)
from ..protocol.messages.jobs import SpawnEntry
from ..protocol.options import ScheduleSpec
from .base import Handler, Request, Service, refusal
from .jobs import Jobs

log = logging.getLogger("remotecell.runtime")

MAX_SLEEP_S = 60.0
FIRES_KEPT = 100  # fire records kept per schedule (older slots are long past)
FIRES_SHOWN = 20
CALL_ID = re.compile(r"fc-[0-9a-f]{1,64}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    app_name TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    last_call TEXT,
    last_at REAL,
    last_trigger TEXT,
    PRIMARY KEY (app_name, name)
);
CREATE TABLE IF NOT EXISTS schedule_fires (
    app_name TEXT NOT NULL,
    name TEXT NOT NULL,
    slot REAL NOT NULL,
    outcome TEXT NOT NULL,
    call_id TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (app_name, name, slot)
);
"""


def next_fire_s(spec: ScheduleSpec, after_s: float) -> float:
    """The first slot of ``spec`` after wall-clock ``after_s``."""
    if spec.period_s is not None:
        return after_s + spec.period_s
    return next_cron_s(str(spec.cron), spec.timezone, after_s)


def next_cron_s(cron: str, timezone: str, after_s: float) -> float:
    """The next time after ``after_s`` that ``cron`` matches in ``timezone``.

    When the clocks go back a wall time happens twice: it fires the first time
    only, unless the hour field is ``*`` (an hourly or finer cron goes on as time passes).
    """
    import zoneinfo  # here, as croniter: ~7 ms of a runtime's start (it reads the interpreter's build config)

    from croniter import croniter  # here, not at the top: it costs a runtime's start ~14 ms, most use no cron

    tz = zoneinfo.ZoneInfo(timezone)
    every_hour = cron.split()[1].startswith("*")
    t = after_s
    while True:
        t = float(croniter(cron, datetime.datetime.fromtimestamp(t, tz)).get_next(float))
        if every_hour or not datetime.datetime.fromtimestamp(t, tz).fold:
            return t


def check_spec(spec: ScheduleSpec) -> None:
    """Refuse a schedule that cannot fire (the client checks first; this guards what gets saved)."""
    try:
        if (spec.period_s is None) == (spec.cron is None):
            raise ValueError("give period_s or cron, not both or neither")
        if spec.period_s is not None and spec.period_s < 1:
            raise ValueError("a period is at least 1 s")
        next_fire_s(spec, time.time())
    except Exception as exc:
        raise refusal(ErrorName.INVALID, f"schedule {spec.fields()!r} cannot fire: {exc}") from None


@dataclass
class ScheduleState:
    app_name: str
    name: str
    spec: ScheduleSpec
    paused: bool = False
    next_at: float | None = None
    last_call: str | None = None
    last_at: float | None = None
    last_trigger: str | None = None
    persist: bool = True  # a deployed app's (saved, fires once per slot across restarts); an ephemeral app's not

    @property
    def key(self) -> tuple[str, str]:
        return self.app_name, self.name


class Scheduler(Service):
    """The schedules of deployed functions on the daemon's loop; ``handlers`` answer the schedule messages."""

    def __init__(self, db: sqlite3.Connection, jobs: Jobs, pool_of: Callable[[str, str], Pool | None]) -> None:
        self.db = db
        self.jobs = jobs
        self.pool_of = pool_of  # (app name, function name) -> the pool deployed under it now
        self.db.executescript(SCHEMA)
        self.schedules = {s.key: s for s in self._load()}
        self.timer: asyncio.TimerHandle | None = None
        self.started = False

    def handlers(self) -> dict[type[Message], Handler]:
        return {ScheduleListMsg: self.on_list, ScheduleGetMsg: self.on_get, SchedulePauseMsg: self.on_pause,
                ScheduleResumeMsg: self.on_resume, ScheduleRunMsg: self.on_run}

    def _load(self) -> list[ScheduleState]:
        rows = self.db.execute("SELECT app_name, name, spec, paused, next_at, last_call, last_at, last_trigger "
                               "FROM schedules")
        return [ScheduleState(a, n, ScheduleSpec.from_wire(json.loads(spec)), bool(p), nx, lc, la, lt)
                for a, n, spec, p, nx, lc, la, lt in rows]

    def start(self) -> None:
        """Begin firing (after the deployed apps are restored); a slot missed while down fires now, once."""
        self.started = True
        self._arm()

    def close(self) -> None:
        self.started = False
        if self.timer is not None:
            self.timer.cancel()

    # -- what deploys and stops change ----------------------------------------------------------

    def sync(self, app_name: str, name: str, spec: ScheduleSpec | None, persist: bool = True) -> None:
        """A definition was registered: keep its schedule if unchanged, else replace or drop it.

        ``persist=False``: an ephemeral app's (``app_name`` is its id), kept in memory only; it fires while the
        app runs and goes with it (``remove_app``), as Modal's schedules in ``app.run()`` do.
        """
        old = self.schedules.get((app_name, name))
        if spec is None:
            if old is not None:
                self.remove(app_name, name)
            return
        if old is not None and old.spec == spec:
            return  # the same schedule (a restore, or a redeploy of other changes): its state goes on
        schedule = ScheduleState(app_name, name, spec, next_at=next_fire_s(spec, time.time()), persist=persist)
        if old is not None:
            schedule.last_call, schedule.last_at, schedule.last_trigger = old.last_call, old.last_at, old.last_trigger
        self.schedules[schedule.key] = schedule
        self._save(schedule)
        log.info("schedule of %s in %s: %s", name, app_name, spec.describe())
        self._arm()

    def remove(self, app_name: str, name: str) -> None:
        self.schedules.pop((app_name, name), None)
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM schedules WHERE app_name = ? AND name = ?", (app_name, name))
        self.db.execute("DELETE FROM schedule_fires WHERE app_name = ? AND name = ?", (app_name, name))
        self.db.execute("COMMIT")
        self._arm()

    def remove_app(self, app_name: str) -> None:
        for key in [k for k in self.schedules if k[0] == app_name]:
            self.remove(*key)

    def _save(self, s: ScheduleState) -> None:
        if not s.persist:
            return
        self.db.execute("INSERT OR REPLACE INTO schedules (app_name, name, spec, paused, next_at, last_call, "
                        "last_at, last_trigger) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (s.app_name, s.name, json.dumps(s.spec.fields()), int(s.paused), s.next_at, s.last_call,
                         s.last_at, s.last_trigger))

    # -- the timer ----------------------------------------------------------------------------

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        due = [s.next_at for s in self.schedules.values() if s.next_at is not None]
        if not self.started or not due:
            return
        wait_s = min(max(min(due) - time.time(), 0.0), MAX_SLEEP_S)
        self.timer = asyncio.get_running_loop().call_later(wait_s, self._wake)

    def _wake(self) -> None:
        self.timer = None
        try:
            now = time.time()
            for schedule in list(self.schedules.values()):
                if schedule.next_at is not None and schedule.next_at <= now:
                    self._fire_slot(schedule, schedule.next_at, now)
        except Exception:
            log.exception("firing schedules failed")
        finally:
            self._arm()

    def _fire_slot(self, s: ScheduleState, slot: float, now: float) -> None:
        """Record slot ``slot`` (once: a recorded slot never fires again), spawn its run unless skipped."""
        s.next_at = next_fire_s(s.spec, now)  # from now: missed slots before it are not run one by one
        pool = self.pool_of(s.app_name, s.name)
        call_id = ids.new_call_id()
        outcome = self._skip_reason(s, pool) or "spawned"
        if not s.persist:  # an ephemeral app's: no restart to survive, nothing to record
            self._fire_ephemeral(s, pool, call_id, outcome, now)
            return
        self.db.execute("BEGIN")
        fresh = self.db.execute("INSERT OR IGNORE INTO schedule_fires (app_name, name, slot, outcome, call_id, at) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (s.app_name, s.name, slot, outcome,
                                                              call_id if outcome == "spawned" else None, now)).rowcount
        if fresh and outcome == "spawned":
            s.last_call, s.last_at, s.last_trigger = call_id, now, "schedule"
        self._save(s)
        self.db.execute("DELETE FROM schedule_fires WHERE app_name = ? AND name = ? AND slot NOT IN (SELECT slot "
                        "FROM schedule_fires WHERE app_name = ? AND name = ? ORDER BY slot DESC LIMIT ?)",
                        (s.app_name, s.name, s.app_name, s.name, FIRES_KEPT))
        self.db.execute("COMMIT")
        if not fresh:
            log.info("slot %s of %s in %s fired before the restart: not again", slot, s.name, s.app_name)
        elif pool is not None and outcome == "spawned":
            self._spawn(pool, call_id)
        else:
            log.info("skipped a slot of %s in %s: %s", s.name, s.app_name, outcome)

    def _fire_ephemeral(self, s: ScheduleState, pool: Pool | None, call_id: str, outcome: str, now: float) -> None:
        if pool is None or outcome != "spawned":
            log.info("skipped a slot of %s in %s: %s", s.name, s.app_name, outcome)
            return
        s.last_call, s.last_at, s.last_trigger = call_id, now, "schedule"
        self._spawn(pool, call_id)

    def _skip_reason(self, s: ScheduleState, pool: Pool | None) -> str | None:
        if pool is None:
            return "skipped: the function is not registered on this runtime (its restore failed)"
        if s.last_call is not None and s.last_call in self.jobs.live:
            return f"skipped: the run before ({s.last_call}) is still running"
        return None

    def _spawn(self, pool: Pool, call_id: str) -> None:
        def saved(error: Exception | None) -> None:
            if error is not None:
                log.error("could not save scheduled call %s of %s: %s", call_id, pool.fn.name, error)

        from ..protocol import pickling  # cloudpickle: only to make the arguments of a call with none

        no_args = pickling.serialize(((), {}))
        self.jobs.submit(pool, [(SpawnEntry(id=call_id), [no_args])], None, saved)

    # -- messages -----------------------------------------------------------------------------

    def _schedule(self, ref: ScheduleRef) -> ScheduleState:
        app_name, name = ref.app, ref.name
        schedule = self.schedules.get((app_name, name))
        if schedule is None:
            here = sorted(n for a, n in self.schedules if a == app_name)
            has = f"its scheduled functions: {', '.join(here)}" if here else "is it deployed? see `remotecell app list`"
            raise refusal(ErrorName.NOT_FOUND, f"no schedule for {name!r} in deployed app {app_name!r} ({has})")
        return schedule

    def state(self, s: ScheduleState) -> ScheduleReply:
        """What a client shows: the spec, paused, the next slot, the last run and its state, recent fires."""
        last = None
        if s.last_call is not None:
            last = {"call_id": s.last_call, "at": s.last_at, "trigger": s.last_trigger,
                    "state": self._call_state(s.last_call)}
        fires = [{"slot": slot, "outcome": outcome, "call_id": call_id, "at": at}
                 for slot, outcome, call_id, at in self.db.execute(
                     "SELECT slot, outcome, call_id, at FROM schedule_fires WHERE app_name = ? AND name = ? "
                     "ORDER BY slot DESC LIMIT ?", (s.app_name, s.name, FIRES_SHOWN))]
        return ScheduleReply(app=s.app_name, function=s.name, spec=s.spec.fields(), description=s.spec.describe(),
                             paused=s.paused, next_at=s.next_at, last=last, fires=fires)

    def _call_state(self, call_id: str) -> str:
        try:
            return str(self.jobs.status(call_id)["state"])
        except Exception:  # not in the job store (its write failed): say so rather than fail the answer
            return "missing"

    def on_list(self, req: Request[ScheduleListMsg]) -> ScheduleListReply:
        app_name = req.msg.app
        chosen = [s for s in self.schedules.values() if app_name is None or s.app_name == app_name]
        return ScheduleListReply(schedules=[self.state(s) for s in sorted(chosen, key=lambda s: s.key)])

    def on_get(self, req: Request[ScheduleGetMsg]) -> ScheduleReply:
        return self.state(self._schedule(req.msg))

    def on_pause(self, req: Request[SchedulePauseMsg]) -> ScheduleReply:
        s = self._schedule(req.msg)
        s.paused, s.next_at = True, None
        return self._changed(s)

    def on_resume(self, req: Request[ScheduleResumeMsg]) -> ScheduleReply:
        s = self._schedule(req.msg)
        if s.paused:
            s.paused, s.next_at = False, next_fire_s(s.spec, time.time())
        return self._changed(s)

    def _changed(self, s: ScheduleState) -> ScheduleReply:
        self._save(s)
        self._arm()
        return self.state(s)

    def on_run(self, req: Request[ScheduleRunMsg]) -> ScheduleReply:
        """Run it now, whatever its slots, overlap and pause say; the next slot stays as it was."""
        s = self._schedule(req.msg)
        pool = self.pool_of(s.app_name, s.name)
        if pool is None:
            raise refusal(ErrorName.NOT_FOUND, f"{s.name} of deployed app {s.app_name!r} is not registered on this "
                           "runtime: deploy it again")
        call_id = req.msg.call or ids.new_call_id()  # the client's own id: a resent request runs once
        if not CALL_ID.fullmatch(call_id):
            raise refusal(ErrorName.INVALID, f"schedule_run: call={call_id!r} is not a call id ('fc-' and hex digits)")
        s.last_call, s.last_at, s.last_trigger = call_id, time.time(), "run_now"
        self._save(s)
        self._spawn(pool, call_id)
        reply = self.state(s)
        reply.call_id = call_id
        return reply
