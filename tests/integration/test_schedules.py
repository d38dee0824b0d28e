"""Schedules of deployed functions against a real runtime: firing, overlap, pause/resume/run now, restarts, CLI."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sqlite3
import subprocess
import sys
import time
import zoneinfo
from pathlib import Path

import pytest
import remotecell as rc
from conftest import Runtime, cli, wait_for
from remotecell import _client
from remotecell.exceptions import InvalidError, NotFoundError
from remotecell.schedules import Schedule
from remotecell_runtime.protocol import framing, pickling
from scheduling import deploy_scheduled


def spawned(schedule: Schedule) -> list[dict]:
    """The fired slots that started a run, oldest first (after asking the runtime again)."""
    return [f for f in reversed(schedule.refresh().fires) if f["outcome"] == "spawned"]


def test_a_period_fires_repeatedly_each_fire_a_durable_call_with_logs(scheduled):
    schedule = rc.Function.from_name(scheduled, "tick").schedule()
    assert schedule.state["spec"] == {"period_s": 1.0} and not schedule.paused
    fires = wait_for(lambda: (f := spawned(schedule)) and len(f) >= 3 and f, timeout_s=60, what="three fires")
    assert len({f["call_id"] for f in fires}) == len(fires)
    slots = [f["slot"] for f in fires]
    assert all(b - a >= 1.0 for a, b in zip(slots, slots[1:], strict=False))  # a period apart, at least
    for fire in fires[:3]:
        call = rc.FunctionCall.from_id(fire["call_id"])
        assert call.get(timeout=60) == "ticked"
        assert "tick at" in call.logs()
    assert schedule.refresh().last["trigger"] == "schedule"
    assert schedule.next_at > schedule.last["at"]


def test_overlap_skips_a_slot_whose_previous_run_is_still_running(runtime, tmp_path):
    gate = tmp_path / "gate"
    deploy_scheduled(tmp_path, "overlap", gate=str(gate))
    try:
        schedule = rc.Function.from_name("overlap", "tick").schedule()
        first = wait_for(lambda: spawned(schedule), timeout_s=60, what="the first run")[0]
        skipped = wait_for(lambda: [f for f in schedule.refresh().fires if f["outcome"].startswith("skipped")],
                           timeout_s=30, what="a skipped slot")
        assert f"the run before ({first['call_id']}) is still running" in skipped[0]["outcome"]
        assert skipped[0]["call_id"] is None
        assert [f["call_id"] for f in spawned(schedule)] == [first["call_id"]]  # one run at a time
        gate.touch()
        assert rc.FunctionCall.from_id(first["call_id"]).get(timeout=30) == "ticked"
        wait_for(lambda: len(spawned(schedule)) >= 2, timeout_s=30, what="a run once the first one ended")
    finally:
        gate.touch()
        rc.App.stop_deployed("overlap")


def test_pause_resume_and_run_now_from_python(scheduled):
    tick = rc.Function.from_name(scheduled, "tick")
    schedule = tick.schedule()
    wait_for(lambda: spawned(schedule), timeout_s=60, what="a first fire")
    assert schedule.pause() is schedule and schedule.paused and schedule.next_at is None
    paused_at, fired = time.time(), len(spawned(schedule))
    call = schedule.run_now()
    assert call.get(timeout=60) == "ticked"
    assert schedule.refresh().last == {"call_id": call.object_id, "at": pytest.approx(paused_at, abs=30),
                                       "trigger": "run_now", "state": "succeeded"}
    # Nothing fires while paused: wait out two and a half periods of it.
    wait_for(lambda: time.time() > paused_at + 2.5, what="two and a half periods")
    assert len(spawned(schedule)) == fired and schedule.paused
    resumed = asyncio.run(schedule.resume.aio())
    assert not resumed.paused and resumed.next_at > paused_at
    wait_for(lambda: len(spawned(schedule)) > fired, timeout_s=30, what="a fire after resume")


def test_schedule_commands(scheduled):
    listed = cli("schedule", "list", scheduled)
    assert listed.returncode == 0 and f"tick in {scheduled}: every 1 s; next " in listed.stdout, listed.stderr
    paused = cli("schedule", "pause", scheduled, "tick")
    assert paused.returncode == 0 and "every 1 s; paused" in paused.stdout, paused.stderr
    assert rc.Function.from_name(scheduled, "tick").schedule().paused
    ran = cli("schedule", "run", scheduled, "tick")
    assert ran.returncode == 0, ran.stderr
    call_id = ran.stdout.split()[1].rstrip(";")
    assert rc.FunctionCall.from_id(call_id).get(timeout=60) == "ticked"
    resumed = cli("schedule", "resume", scheduled, "tick")
    assert resumed.returncode == 0 and "; next " in resumed.stdout, resumed.stderr
    missing = cli("schedule", "pause", scheduled, "nope")
    assert missing.returncode == 1 and f"no schedule for 'nope' in deployed app {scheduled!r}" in missing.stderr
    assert missing.returncode == 1 and "its scheduled functions: tick" in missing.stderr


def test_redeploy_replaces_the_schedule_and_stop_removes_it(scheduled, tmp_path):
    deploy_scheduled(tmp_path, scheduled, schedule='rc.Cron("0 3 * * *", timezone="Europe/Berlin")')
    schedule = rc.Function.from_name(scheduled, "tick").schedule()
    assert schedule.state["description"] == "cron '0 3 * * *' (Europe/Berlin)"
    berlin = datetime.datetime.fromtimestamp(schedule.next_at, zoneinfo.ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute) == (3, 0)
    assert scheduled in cli("schedule", "list").stdout
    assert cli("app", "stop", scheduled).returncode == 0
    assert scheduled not in cli("schedule", "list").stdout
    with pytest.raises(NotFoundError, match=f"no schedule for 'tick' in deployed app {scheduled!r}"):
        schedule.refresh()


def _query(path: Path, sql: str, *params: object) -> list[tuple]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _calls_of(state_dir: Path, function: str) -> set[str]:
    return {row[0] for row in _query(state_dir / "jobs.db", "SELECT id FROM calls WHERE function = ?", function)}


def _stored_next_at(state_dir: Path, app_name: str) -> float:
    [(next_at,)] = _query(state_dir / "deployed.db", "SELECT next_at FROM schedules WHERE app_name = ?", app_name)
    return float(next_at)


def test_restarts_fire_each_slot_at_most_once_and_a_missed_schedule_once(tmp_path, new_home):
    state = new_home("restarting")
    env = {"REMOTECELL_HOME": str(state)}
    rt = Runtime(state)
    try:
        deploy_scheduled(tmp_path, "every2", schedule="rc.Period(seconds=2)", env=env)
        ask = ('import json, remotecell as rc; s = rc.Function.from_name("every2", "tick").schedule(); '
               'print(json.dumps(s.state))')
        def state_now() -> dict:
            done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=60,
                                  env=dict(os.environ, **env))
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        def quiet(s: dict) -> bool:  # its last run is done and the next slot is not about to fire
            last = s.get("last") or {}
            return last.get("state") == "succeeded" and s["next_at"] - time.time() > 1.0

        # Stopped while a run is unfinished, the runtime would run it again after the restart, and the
        # catch-up would be skipped as an overlap: stop it between runs.
        wait_for(lambda: quiet(state_now()), timeout_s=60, what="a first run done, the next slot > 1 s away")
        rt.stop()
        stopped_at = time.time()
        missed_slot = _stored_next_at(state, "every2")
        wait_for(lambda: time.time() > max(missed_slot, stopped_at) + 4, what="two more slots to pass, missed")
        restarted_at = time.time()
        rt = Runtime(state)
        after = wait_for(lambda: (s := state_now()) and any(f["at"] >= restarted_at for f in s["fires"]) and s,
                         timeout_s=60, what="the missed schedule to run after the restart")
        caught_up = [f for f in after["fires"] if f["at"] >= restarted_at and f["slot"] < restarted_at]
        assert len(caught_up) == 1  # the missed slots run once, not once each
        assert caught_up[0]["slot"] == missed_slot and caught_up[0]["outcome"] == "spawned"
        assert after["next_at"] >= caught_up[0]["at"] + 2 - 0.01  # counted from the catch-up run
        slots = [f["slot"] for f in after["fires"]]
        assert len(slots) == len(set(slots))
        fired = {f["call_id"] for f in after["fires"] if f["outcome"] == "spawned"}
        assert _calls_of(state, "tick") == fired  # each fire record one call, no call without its record
    finally:
        rt.stop()


def test_schedule_options_are_checked_where_they_are_given(runtime):
    with pytest.raises(InvalidError, match=r"rc.Cron\('0 3 \* \*'\) is not a cron expression"):
        rc.Cron("0 3 * *")
    with pytest.raises(InvalidError, match=r"timezone='Europe/Nowhere'\) is not a time zone"):
        rc.Cron("0 3 * * *", timezone="Europe/Nowhere")
    with pytest.raises(InvalidError, match="is 0.5 s: a period must be at least 1 s"):
        rc.Period(seconds=0.5)
    with pytest.raises(InvalidError, match="minutes=-1 is out of range"):
        rc.Period(minutes=-1)
    app = rc.App("schedule-checks")
    with pytest.raises(InvalidError, match="schedule='daily' must be rc.Cron"):
        app.function(schedule="daily")
    with pytest.raises(InvalidError, match="called with no arguments, but it requires x, y"):
        app.function(schedule=rc.Period(hours=1))(lambda x, y, z=1: x)
    with pytest.raises(InvalidError, match="@app.cls takes no schedule"):
        app.cls(schedule=rc.Period(hours=1))

    @app.function(schedule=rc.Period(hours=1), name="hourly")
    def hourly(z=1):
        return z

    with app.run():  # an ephemeral app's schedule fires while it runs (test_app_surface.py); a call works as usual
        assert hourly.remote() == 1
    with pytest.warns(UserWarning, match=r"started by a call, not by app.run\(\): the schedules of hourly fire only"):
        assert hourly.remote() == 1  # the ephemeral app a first call starts (a notebook's) fires none
    app.stop()
    with pytest.raises(NotFoundError, match="no schedule for 'hourly' in deployed app 'schedule-checks'"):
        hourly.schedule()


def test_the_runtime_refuses_a_schedule_that_cannot_fire(runtime):
    conn = _client.connection()
    app_id = conn.request({"t": "app_create", "name": "raw-schedule", "mode": "deployed", "sid": conn.sid})["app_id"]
    try:
        with pytest.raises(InvalidError, match="cannot fire"):
            conn.request({"t": "fn_register", "app_id": app_id, "name": "f",
                          "options": {"schedule": {"cron": "nope", "timezone": "UTC"}}},
                         [framing.Payload([pickling.dumps(len)])])  # any body: the schedule is refused first
    finally:
        rc.App.stop_deployed("raw-schedule")
