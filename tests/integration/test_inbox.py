"""``rc.calls(since=...)``, the session inbox: the job store's spawned calls, listed from any process."""

from __future__ import annotations

import datetime
import time

import pytest
import remotecell as rc
from conftest import run_script
from remotecell.calls import since_timestamp
from remotecell.exceptions import InvalidError


def test_spawned_calls_are_listed_newest_first_and_reattached(app):
    @app.function()
    def inbox_square(x):
        return x * x

    before = datetime.datetime.now()
    first, second = inbox_square.spawn(3), inbox_square.spawn(4)
    assert second.get(timeout=60) == 16 and first.get(timeout=60) == 9
    listed = rc.calls(since="1h")
    ids = [info.object_id for info in listed]
    assert ids.index(second.object_id) < ids.index(first.object_id)  # newest first
    info = listed[ids.index(first.object_id)]
    assert info.state == "succeeded" and info.function.endswith("inbox_square") and info.attempts == 1
    assert info.start >= before.astimezone() - datetime.timedelta(seconds=1) and info.end is not None
    assert datetime.timedelta(0) <= info.duration < datetime.timedelta(seconds=60)
    assert info.reattach().get(timeout=10) == 9 and info.get() == 9
    assert info.snippet.startswith(f'call = rc.FunctionCall.from_id("{first.object_id}")')
    assert first.object_id in repr(listed) and "succeeded" in repr(listed)
    assert first.object_id in {i.object_id for i in rc.calls(since=datetime.timedelta(minutes=5))}
    assert first.object_id in {i.object_id for i in rc.calls(since=before - datetime.timedelta(seconds=1))}
    later = datetime.datetime.now() + datetime.timedelta(seconds=1)
    assert first.object_id not in {i.object_id for i in rc.calls(since=later)}
    assert len(rc.calls(since=None, limit=1)) == 1


def test_a_running_call_is_listed_with_its_state(app, tmp_path):
    gate = tmp_path / "go"

    @app.function()
    def inbox_waits():
        while not gate.exists():
            time.sleep(0.01)
        return "done"

    call = inbox_waits.spawn()
    try:
        from conftest import wait_for

        wait_for(lambda: any(i.object_id == call.object_id and i.state == "running" for i in rc.calls(since="5m")),
                 what="the call listed as running")
    finally:
        gate.touch()
    assert call.get(timeout=60) == "done"


def test_bad_spans_and_limits_are_named():
    for bad in ("yesterday", "5 parsecs", -3, datetime.timedelta(seconds=-1)):
        with pytest.raises(InvalidError, match="since="):
            since_timestamp(bad)
    with pytest.raises(InvalidError, match=r"limit=0: give a number of calls from 1 to 500"):
        rc.calls(limit=0)
    now = datetime.datetime(2026, 1, 2, 12, 0).astimezone()
    assert since_timestamp("1d", now) == now.timestamp() - 86400
    assert since_timestamp("30m", now) == now.timestamp() - 1800
    assert since_timestamp("1.5h", now) == now.timestamp() - 5400
    assert since_timestamp(None) is None


def test_another_process_lists_and_fetches_a_call(app, tmp_path):
    @app.function()
    def inbox_other(x):
        return x + 100

    call = inbox_other.spawn(1)
    script = run_script(f"""
import remotecell as rc
[info] = [i for i in rc.calls(since="1h") if i.object_id == {call.object_id!r}]
print("fetched", info.reattach().get(timeout=60), info.function)
""", tmp_path=tmp_path)
    assert script.returncode == 0, script.stderr
    assert "fetched 101" in script.stdout and "inbox_other" in script.stdout


def test_deployed_runs_are_listed_a_schedules_runs_and_a_looked_up_functions_spawns(scheduled):
    """The inbox lists what a deployed app ran for the user: its schedule's runs and calls spawned by name."""
    from conftest import wait_for

    since = datetime.datetime.now() - datetime.timedelta(seconds=1)
    spawned = rc.Function.from_name(scheduled, "tick").spawn()
    assert spawned.get(timeout=60) == "ticked"

    def ticks() -> list:
        return [i for i in rc.calls(since=since) if i.function.endswith("tick") and i.state == "succeeded"]

    wait_for(lambda: len(ticks()) >= 2, timeout_s=30, what="a scheduled run of tick beside the spawned call")
    ids = {info.object_id for info in ticks()}
    assert spawned.object_id in ids and len(ids - {spawned.object_id}) >= 1  # the spawn, and the schedule's own
    fired = {f["call_id"] for f in rc.Function.from_name(scheduled, "tick").schedule().fires
             if f["outcome"] == "spawned"}
    assert fired & ids, (fired, ids)  # the schedule's own runs, by the ids its fire records name
    scheduled_run = next(i for i in ticks() if i.object_id != spawned.object_id)
    assert scheduled_run.reattach().get(timeout=10) == "ticked"  # fetched into this process
