"""spawn, FunctionCall handles and the job store, against a real runtime (and real restarts of it)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import remotecell as rc
from conftest import Runtime, run_script, wait_for
from remotecell import _client, exceptions
from remotecell_runtime.protocol import framing, pickling


def _gate(path: Path, timeout_s: float = 60) -> None:
    """Inside a remote function: wait until the test creates ``path``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def test_spawn_get_status_logs(app, tmp_path):
    gate = tmp_path / "go"

    @app.function()
    def gated(x):
        print("started", x)
        _gate(gate)
        return x * 2

    call = gated.spawn(21)
    assert call.object_id.startswith("fc-")
    with pytest.raises(TimeoutError):
        call.get(timeout=0)  # a poll
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 0.3 s"):
        call.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    wait_for(lambda: call.status()["state"] == "running", what="the call to run")
    wait_for(lambda: "started 21" in call.logs(), what="its output in its logs")
    gate.touch()
    assert call.get(timeout=30) == 42
    status = call.status()
    assert status["state"] == "succeeded" and status["attempts"] == 1 and status["function"].endswith("gated")
    assert call.logs() == "started 21\n"
    assert rc.FunctionCall.gather(call, gated.spawn(1)) == [42, 2]


def test_failed_spawned_call_raises_its_exception(app):
    @app.function()
    def broken():
        raise KeyError("no such thing")

    call = broken.spawn()
    with pytest.raises(KeyError, match="no such thing"):
        call.get(timeout=30)
    assert call.status()["state"] == "failed" and call.status()["error_type"] == "KeyError"


def test_status_says_why_a_call_waits_and_cancel_stops_queued_and_running(app, tmp_path):
    gate = tmp_path / "never"

    @app.function(max_containers=1)
    def blocked(x):
        _gate(gate, timeout_s=120)
        return x

    running = blocked.spawn(1)
    wait_for(lambda: running.status()["state"] == "running", what="the first call to run")
    queued = blocked.spawn(2)
    status = queued.status()
    assert status["state"] == "queued"
    assert status["reason"] == "waiting for a free container (1 running, max_containers=1)"
    queued.cancel()
    with pytest.raises(exceptions.InputCancelled):
        queued.get(timeout=10)
    assert queued.status()["state"] == "cancelled"
    running.cancel()
    with pytest.raises(exceptions.InputCancelled):
        running.get(timeout=10)
    wait_for(lambda: blocked.stats()["running"] == 0, what="the running call to be interrupted")


def test_from_id_in_a_second_process(app, tmp_path):
    @app.function()
    def triple(x):
        return 3 * x

    call = triple.spawn(14)
    done = run_script(f"""
import remotecell as rc
print(rc.FunctionCall.from_id({call.object_id!r}).get(timeout=30))
""", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    missing = run_script("""
import remotecell as rc
try:
    rc.FunctionCall.from_id("fc-0000").get(timeout=5)
except rc.exceptions.NotFoundError as e:
    print("not found:", e)
""", tmp_path=tmp_path)
    assert "not found: no spawned call with id 'fc-0000'" in missing.stdout, missing.stderr
    with pytest.raises(exceptions.InvalidError, match="is not a call id"):
        rc.FunctionCall.from_id("square")


def test_spawn_aio_and_spawn_map_handle(app):
    @app.function(max_containers=2)
    def square(x):
        return x * x

    async def main():
        calls = await asyncio.gather(*(square.spawn.aio(i) for i in range(20)))
        return await rc.FunctionCall.gather.aio(*calls)

    assert asyncio.run(main()) == [i * i for i in range(20)]
    group = square.spawn_map(range(1200))  # more than one message of inputs
    assert len(group) == 1200 and group.get(index=1199, timeout=60) == 1199 ** 2
    assert list(group)[:5] == [0, 1, 4, 9, 16]
    assert group.status() == {"succeeded": 1200}
    again = rc.FunctionCall.from_id(group.object_id)
    assert isinstance(again, rc.FunctionCallGroup) and len(again) == 1200 and again.get(index=7) == 49


def test_a_resent_request_runs_once(app, tmp_path):
    runs = tmp_path / "runs"

    @app.function()
    def record(x):
        with open(runs, "a") as f:
            f.write(f"{x}\n")
        if x == 8:  # still running when its resend comes (an instant one may be done, and then it is a new call)
            time.sleep(1)
        return x

    conn, fid = record.fid()
    call_id = "fc-resent-request"
    payload = pickling.serialize(((7,), {}))
    for _ in range(3):  # the same spawn, as a client would resend it after a reconnect
        header = {"t": "spawn", "id": conn.new_id(), "sid": conn.sid, "fid": fid, "e": [{"id": call_id, "np": 1}]}
        reply, _ = conn.channel().roundtrip(header, [payload])
        assert reply["accepted"] == 1
    assert rc.FunctionCall.from_id(call_id).get(timeout=30) == 7
    # a .remote() call resent while it runs is not run twice either
    header = {"t": "call", "id": conn.new_id(), "fid": fid, "sid": conn.sid}
    channel = conn.channel()
    frames = framing.encode(header, [pickling.serialize(((8,), {}))])
    channel.wire.send(frames)
    reply, payloads = channel.roundtrip(dict(header), [pickling.serialize(((8,), {}))])
    assert _client.result_value(reply, payloads) == 8
    assert runs.read_text().split() == ["7", "8"]


def test_results_expire(tmp_path, new_home):
    state = new_home("short-memory")
    rt = Runtime(state, env={"REMOTECELL_RESULT_RETENTION_S": "0.2"})
    try:
        out = run_script("""
import time, remotecell as rc
app = rc.App("forgetful")

@app.function()
def one():
    return 1

with app.run():
    call = one.spawn()
    print(call.get(timeout=30))
    deadline = time.monotonic() + 30
    while True:
        try:
            call.get(timeout=1)
        except rc.exceptions.OutputExpiredError as e:
            print("expired:", e)
            break
        if time.monotonic() > deadline:
            raise SystemExit("never expired")
        time.sleep(0.2)
    print(call.status()["state"])
""", env={"REMOTECELL_HOME": str(state)}, tmp_path=tmp_path)
    finally:
        rt.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1" and lines[1].startswith("expired: the output of call fc-") and lines[2] == "expired"


CLIENT = """
import sys, time, remotecell as rc
app = rc.App("durable")

@app.function()
def gated(x, gate):
    while not __import__("os").path.exists(gate):
        time.sleep(0.01)
    return x * 10

@app.function()
def quick(x):
    return x + 1

done = quick.spawn(1)
print(done.get(timeout=30), flush=True)
pending = gated.spawn(5, {gate!r})
print(done.object_id, pending.object_id, flush=True)
sys.stdin.readline()  # the test restarts the runtime meanwhile
print(rc.FunctionCall.from_id(done.object_id).get(timeout=30), flush=True)
print(pending.get(timeout=60), pending.status()["state"], flush=True)
"""


def test_runtime_restart_keeps_finished_and_reruns_pending_spawned_calls(tmp_path, new_home):
    state, gate = new_home("restarting"), tmp_path / "gate"
    env = dict(os.environ, REMOTECELL_HOME=str(state))
    env.pop("REMOTECELL_RUNTIME", None)
    rt = Runtime(state)
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(gate=str(gate)))
    client = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    orphan_script = tmp_path / "orphan.py"  # a client that dies with the runtime: its call has no app to come back
    orphan_script.write_text(f"""
import time, remotecell as rc
app = rc.App("gone")

@app.function()
def never(gate):
    while True:
        time.sleep(1)

print(never.spawn({str(gate)!r}).object_id, flush=True)
time.sleep(600)
""")
    orphan = subprocess.Popen([sys.executable, str(orphan_script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert client.stdout.readline().strip() == "2"
        assert client.stdout.readline().startswith("fc-")
        orphan_id = orphan.stdout.readline().strip()
        rt.proc.send_signal(signal.SIGKILL)  # a crash: no goodbye to anyone
        rt.proc.wait(10)
        orphan.kill()
        rt.log.close()
        rt = Runtime(state, env={"REMOTECELL_HEARTBEAT_TIMEOUT_S": "4"})
        gate.touch()
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=90)
        assert client.returncode == 0, err
        assert out.split() == ["2", "50", "succeeded"]  # the finished result, then the re-run one
        gone = run_script(f"""
import remotecell as rc
try:
    rc.FunctionCall.from_id({orphan_id!r}).get(timeout=60)
except rc.exceptions.InputCancelled as e:
    print(e)
""", env={"REMOTECELL_HOME": str(state)}, tmp_path=tmp_path)
        assert "could not run again after the runtime restarted: its app is gone" in gone.stdout, gone.stderr
    finally:
        for proc in (client, orphan):
            if proc.poll() is None:
                proc.kill()
        rt.stop()


def test_ctrl_c_in_get_stops_waiting_and_the_call_goes_on(runtime, tmp_path):
    gate, waiting = tmp_path / "gate", tmp_path / "waiting"
    script = tmp_path / "interrupted_get.py"
    script.write_text(f"""
import os, time, remotecell as rc
app = rc.App("interrupted-get")

@app.function()
def gated():
    while not os.path.exists({str(gate)!r}):
        time.sleep(0.01)
    return "done anyway"

call = gated.spawn()
open({str(waiting)!r}, "w").close()
try:
    call.get()
except KeyboardInterrupt:
    print("interrupted", flush=True)
open({str(gate)!r}, "w").close()
print(call.get(timeout=30))
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(waiting.exists, timeout_s=30, what="the client to wait in get()")
    wait_for(lambda: _running(rc.status(), "gated") == 1, timeout_s=30, what="the spawned call to run")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == ["interrupted", "done anyway"]
    assert "keeps running (call.cancel() stops it)" in err


def _running(status, function: str) -> int:
    return sum(p["running"] for p in status["pools"] if p["function"].endswith(function))
