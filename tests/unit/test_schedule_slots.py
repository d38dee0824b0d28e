"""Schedules without a runtime: slot arithmetic (periods, cron across DST), the text form, fire records."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import time
import zoneinfo

from remotecell.schedules import Schedule
from remotecell_runtime.protocol.options import ScheduleSpec
from remotecell_runtime.services.schedules import Scheduler, next_cron_s, next_fire_s


def test_a_period_counts_from_the_last_run_and_a_cron_from_the_wall_clock():
    assert next_fire_s(ScheduleSpec(period_s=90), 1_000.0) == 1_090.0
    utc_noon = datetime.datetime(2026, 6, 1, 12, 0, 30, tzinfo=datetime.timezone.utc).timestamp()
    at = next_fire_s(ScheduleSpec(cron="*/15 * * * *"), utc_noon)
    assert datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%H:%M:%S") == "12:15:00"
    tokyo = next_fire_s(ScheduleSpec(cron="0 9 * * *", timezone="Asia/Tokyo"), utc_noon)  # 21:00 in Tokyo now
    assert datetime.datetime.fromtimestamp(tokyo, zoneinfo.ZoneInfo("Asia/Tokyo")).strftime("%d %H:%M") == "02 09:00"


def test_cron_next_run_is_wall_clock_in_its_time_zone_across_dst():
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    utc = datetime.timezone.utc

    def runs(cron: str, start: datetime.datetime, n: int) -> list[datetime.datetime]:
        t, out = start.timestamp(), []
        for _ in range(n):
            t = next_cron_s(cron, "Europe/Berlin", t)
            out.append(datetime.datetime.fromtimestamp(t, utc))
        return out

    spring = runs("0 3 * * *", datetime.datetime(2026, 3, 28, 12, tzinfo=berlin), 2)
    assert [d.hour for d in spring] == [1, 1]  # 03:00 CEST is 01:00 UTC
    assert runs("0 3 * * *", datetime.datetime(2026, 3, 27, 12, tzinfo=berlin), 1)[0].hour == 2  # CET: 02:00 UTC
    skipped = runs("30 2 * * *", datetime.datetime(2026, 3, 28, 12, tzinfo=berlin), 1)[0]
    assert skipped == datetime.datetime(2026, 3, 29, 1, 0, tzinfo=utc)  # 02:30 does not exist: at 03:00 CEST
    autumn = runs("30 2 * * *", datetime.datetime(2026, 10, 24, 12, tzinfo=berlin), 2)
    assert autumn == [datetime.datetime(2026, 10, 25, 0, 30, tzinfo=utc),  # 02:30 CEST, the first of two
                      datetime.datetime(2026, 10, 26, 1, 30, tzinfo=utc)]  # not 02:30 CET the same night
    half_hourly = runs("*/30 * * * *", datetime.datetime(2026, 10, 25, 2, 10, tzinfo=berlin), 4)
    assert [b - a for a, b in zip(half_hourly, half_hourly[1:], strict=False)] == [datetime.timedelta(minutes=30)] * 3


def test_the_text_form_says_what_comes_next_and_how_the_last_run_went():
    state = {"description": "every 60 s", "paused": False, "next_at": time.time() + 30,
             "last": {"call_id": "fc-1", "at": 0.0, "trigger": "schedule", "state": "failed"}, "fires": []}
    text = Schedule("etl", "nightly", state).text()
    assert text.startswith("nightly in etl: every 60 s; next ")
    assert "(in 30.0 s)" in text or "(in 29." in text
    assert text.endswith("; last fc-1 at " + datetime.datetime.fromtimestamp(0).strftime("%Y-%m-%d %H:%M:%S")
                         + " (schedule): failed")
    paused = Schedule("etl", "nightly", dict(state, paused=True, next_at=None, last=None)).text()
    assert paused == "nightly in etl: every 60 s; paused; not run yet"


def test_a_slot_with_a_fire_record_never_fires_again(tmp_path):
    """The crash case the runtime tests cannot time: a slot recorded as fired, its next slot not yet saved."""
    spawned_ids: list[str] = []

    class Jobs:
        live: dict[str, object] = {}

        def submit(self, pool, entries, method, then):
            spawned_ids.extend(entry.id for entry, _ in entries)

    db = sqlite3.connect(str(tmp_path / "deployed.db"), isolation_level=None)
    pool = type("Pool", (), {"fn": type("Fn", (), {"name": "tick"})})()
    slot = time.time() - 5
    first = Scheduler(db, Jobs(), lambda app, name: pool)
    first.sync("etl", "tick", ScheduleSpec(period_s=60.0))
    db.execute("UPDATE schedules SET next_at = ?", (slot,))  # the slot came while the runtime was down...
    db.execute("INSERT INTO schedule_fires (app_name, name, slot, outcome, call_id, at) VALUES "
               "('etl', 'tick', ?, 'spawned', 'fc-0', ?)", (slot, slot))  # ...but had fired before the crash

    async def restart() -> Scheduler:
        again = Scheduler(db, Jobs(), lambda app, name: pool)
        again.start()  # arms a zero-second timer for the due slot
        again._wake()  # what that timer runs
        again.close()
        return again

    again = asyncio.run(restart())
    assert spawned_ids == []
    [s] = again.schedules.values()
    assert s.next_at > time.time() + 50  # moved on, from now
    db.execute("UPDATE schedules SET next_at = ?", (slot - 60,))  # an earlier slot, not recorded: it fires
    asyncio.run(restart())
    assert len(spawned_ids) == 1
    db.close()


BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = datetime.timezone.utc


def _slots(cron: str, start: datetime.datetime, n: int, timezone: str = "Europe/Berlin") -> list[datetime.datetime]:
    """The next ``n`` slots of ``cron`` after ``start``, each counted from the one before, in UTC."""
    t, out = start.timestamp(), []
    for _ in range(n):
        t = next_fire_s(ScheduleSpec(cron=cron, timezone=timezone), t)
        out.append(datetime.datetime.fromtimestamp(t, UTC))
    return out


def test_a_wall_time_the_spring_gap_skips_fires_when_the_clocks_jump():
    skipped = _slots("30 2 * * *", datetime.datetime(2026, 3, 28, 12, tzinfo=BERLIN), 2)
    assert skipped[0] == datetime.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:30 does not exist: at 03:00 CEST
    assert skipped[1] == datetime.datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # then 02:30 CEST again


def test_a_wall_time_that_happens_twice_fires_once_unless_the_cron_is_hourly():
    autumn = _slots("30 2 * * *", datetime.datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2)
    assert autumn == [datetime.datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, the first of two
                      datetime.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]  # not 02:30 CET the same night
    half_hourly = _slots("*/30 * * * *", datetime.datetime(2026, 10, 25, 2, 10, tzinfo=BERLIN), 4)
    assert [b - a for a, b in zip(half_hourly, half_hourly[1:], strict=False)] == [datetime.timedelta(minutes=30)] * 3
