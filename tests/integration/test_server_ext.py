"""The Jupyter server extension's REST API, served by a real Jupyter server against the test runtime."""

from __future__ import annotations

import time
import urllib.parse

import pytest
import remotecell as rc
from conftest import Runtime, wait_for
from jupyter_helpers import JupyterServer
from remotecell import _client
from scheduling import deploy_scheduled


@pytest.fixture(scope="module")
def server(runtime, tmp_path_factory):
    srv = JupyterServer(tmp_path_factory.mktemp("jupyter"), runtime.state_dir)
    yield srv
    srv.stop()


def _ok(srv: JupyterServer, method: str, path: str) -> dict:
    code, body = srv.api(method, path)
    assert code == 200, (code, body, srv.log_text()[-3000:])
    return body


def test_requests_without_the_token_are_refused(server):
    for method, path in [("GET", "status"), ("GET", "calls"), ("GET", "stores"),
                         ("GET", "calls/fc-00/logs"), ("POST", "calls/fc-00/cancel")]:
        code, _ = server.api(method, path, token=False)
        assert code in (401, 403), (method, path, code)


def test_status_shows_the_apps_and_functions_called(server, app):
    @app.function()
    def panel_square(x):
        return x * x

    assert panel_square.remote(7) == 49
    status = _ok(server, "GET", "status")
    assert status["address"] and status["runtime_id"] and "gpus" in status
    assert any(a["name"] == "test" and "panel_square" in " ".join(a["functions"]) for a in status["apps"])
    pool = next(p for p in status["pools"] if p["function"].endswith("panel_square"))
    assert sum(pool["containers"].values()) >= 1 and pool["queued"] == 0


def test_pools_count_answered_inputs_and_a_functions_logs_follow_a_cursor(server, app):
    @app.function()
    def panel_prints(x):
        print(f"printed {x}")
        return x

    assert list(panel_prints.map(range(3))) == [0, 1, 2]
    pool = next(p for p in _ok(server, "GET", "status")["pools"] if p["function"].endswith("panel_prints"))
    assert pool["answered"] == 3
    assert set(pool["container_states"]) == set(pool["placements"]) and pool["container_states"]
    logs = f"functions/test/{urllib.parse.quote(pool['function'], safe='')}/logs"
    first = _ok(server, "GET", logs)
    assert all(f"printed {x}" in first["text"] for x in range(3)) and first["live"]
    assert panel_prints.remote(9) == 9
    more = wait_for(lambda: _ok(server, "GET", f"{logs}?after={first['next']}")["text"],
                    what="the new line after the cursor")
    assert more.strip() == "printed 9"
    assert _ok(server, "GET", "functions/test/nope/logs")["text"] == ""  # another function's lines are not its
    assert server.api("GET", f"{logs}?after=x")[0] == 400
    assert server.api("GET", "functions/no-such-app/f/logs")[0] == 404
    assert isinstance(_ok(server, "GET", "images")["images"], list)


def test_a_spawned_call_is_listed_and_cancelled_through_the_api(server, app):
    @app.function()
    def panel_waits():
        print("waiting for the test")
        time.sleep(300)  # until the test cancels it

    call = panel_waits.spawn()
    wait_for(lambda: call.status()["state"] == "running", what="the call to run")
    listed = _ok(server, "GET", "calls")["calls"]
    mine = next(c for c in listed if c["id"] == call.object_id)
    assert mine["state"] == "running" and mine["function"].endswith("panel_waits") and mine["container"]
    wait_for(lambda: "waiting for the test" in _ok(server, "GET", f"calls/{call.object_id}/logs")["text"],
             what="the running call's logs through the API")
    assert _ok(server, "POST", f"calls/{call.object_id}/cancel") == {"id": call.object_id, "cancelled": True}
    wait_for(lambda: call.status()["state"] == "cancelled", what="the runtime to cancel the call")
    assert _ok(server, "GET", f"calls/{call.object_id}")["state"] == "cancelled"
    with pytest.raises(rc.exceptions.InputCancelled):
        call.get(timeout=10)


def test_logs_of_a_finished_call_and_the_newest_calls_first(server, app):
    @app.function()
    def panel_prints(x):
        print(f"hello from the panel test {x}")
        return x

    first, second = panel_prints.spawn(1), panel_prints.spawn(2)
    assert rc.FunctionCall.gather(first, second) == [1, 2]
    assert _ok(server, "GET", f"calls/{first.object_id}/logs") == {"id": first.object_id,
                                                                  "text": "hello from the panel test 1\n"}
    listed = _ok(server, "GET", "calls?limit=2")["calls"]
    assert [c["id"] for c in listed] == [second.object_id, first.object_id]
    assert all(c["state"] == "succeeded" and c["finished_at"] >= c["created_at"] for c in listed)
    recent = [c["id"] for c in _ok(server, "GET", "calls?limit=100&since_s=3600")["calls"]]  # the panel's Inbox
    assert recent[:2] == [second.object_id, first.object_id]
    assert _ok(server, "GET", "calls?since_s=0")["calls"] == []  # nothing made after now
    for bad in ("-1", "soon", "inf"):
        code, body = server.api("GET", f"calls?since_s={bad}")
        assert code == 400 and f"since_s={bad!r}: give how many seconds back to look" in body["message"]


def test_stores_are_listed_with_their_sizes(server, runtime):
    d = rc.Dict.from_name("panel-dict", create_if_missing=True)
    d.update(a=1, b=2)
    q = rc.Queue.from_name("panel-queue", create_if_missing=True)
    q.put_many([1, 2, 3])
    with rc.Dict.ephemeral() as scratch:
        scratch["x"] = 1
        body = _ok(server, "GET", "stores")
    stores = body["stores"]
    assert body["truncated"] is False
    named = {(s["kind"], s["name"]): s for s in stores if s["name"]}
    assert named["dict", "panel-dict"]["size"] == 2 and not named["dict", "panel-dict"]["ephemeral"]
    assert named["queue", "panel-queue"]["size"] == 3
    assert any(s["ephemeral"] and s["kind"] == "dict" and s["size"] == 1 for s in stores)


def test_schedules_are_listed_paused_resumed_and_run_now(server, runtime, tmp_path):
    deploy_scheduled(tmp_path, "panel-sched", schedule="rc.Period(hours=1)")
    try:
        listed = _ok(server, "GET", "schedules")["schedules"]
        mine = next(s for s in listed if s["app"] == "panel-sched")
        assert mine["function"] == "tick" and not mine["paused"] and mine["next_at"]
        paused = _ok(server, "POST", "schedules/panel-sched/tick/pause")
        assert paused["paused"] and paused["next_at"] is None
        assert rc.Function.from_name("panel-sched", "tick").schedule().paused
        assert not _ok(server, "POST", "schedules/panel-sched/tick/resume")["paused"]
        ran = _ok(server, "POST", "schedules/panel-sched/tick/run")
        assert ran["last"]["trigger"] == "run_now"
        assert rc.FunctionCall.from_id(ran["call_id"]).get(timeout=60) == "ticked"
        code, body = server.api("POST", "schedules/panel-sched/nope/pause")
        assert code == 404 and "no schedule for 'nope'" in body["message"]
    finally:
        rc.App.stop_deployed("panel-sched")


def test_bad_and_unknown_call_ids_and_limits(server, runtime):
    code, body = server.api("GET", "calls/fc-0123abcd/logs")
    assert code == 404 and "no spawned call" in body["message"]
    code, body = server.api("POST", "calls/fc-0123abcd/cancel")
    assert code == 404
    code, body = server.api("GET", "calls/not-an-id/logs")
    assert code == 400 and "is not a call id" in body["message"]
    code, body = server.api("GET", "calls?limit=-3")
    assert code == 400 and "limit" in body["message"]


def test_without_a_runtime_the_api_says_so_and_starts_none(runtime, tmp_path):
    empty_home = tmp_path / "no-runtime"
    srv = JupyterServer(tmp_path / "jupyter", empty_home)
    try:
        code, body = srv.api("GET", "status")
        assert code == 503 and "no remotecell runtime is running" in body["message"]
        assert "`%load_ext remotecell`" in body["message"]
        assert srv.api("GET", "calls")[0] == 503
        assert not (empty_home / "connection.json").exists()
    finally:
        srv.stop()


def test_a_configured_runtime_that_is_missing_is_a_503(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("REMOTECELL_RUNTIME", str(tmp_path / "missing.json"))
    srv = JupyterServer(tmp_path / "jupyter", tmp_path / "home", keep_runtime_env=True)
    try:
        code, body = srv.api("GET", "stores")
        assert code == 503 and "missing.json does not exist" in body["message"]
    finally:
        srv.stop()


def test_the_server_follows_the_runtime_stopping_and_a_new_one_starting(runtime, tmp_path, new_home):
    home = new_home("home")
    first = Runtime(home)
    srv = JupyterServer(tmp_path / "jupyter", home)
    try:
        code, body = srv.api("GET", "status")
        assert code == 200 and body["pid"] == first.proc.pid
        first.stop()
        code, body = srv.api("GET", "status")
        assert code == 503 and "no remotecell runtime is running" in body["message"]
        second = Runtime(home)
        try:
            code, body = srv.api("GET", "status")
            assert code == 200 and body["pid"] == second.proc.pid
        finally:
            second.stop()
    finally:
        srv.stop()
        first.stop()


def test_the_runtime_refuses_a_bad_calls_recent_limit(runtime):
    for limit in ("10", 0, 2.5, None):
        with pytest.raises(rc.exceptions.InvalidError,
                           match="field 'limit' must be an integer|limit must be a positive integer"):
            _client.connection().request({"t": "calls_recent", "limit": limit})
