"""The runtime as a service: bad input, auth, auto-start, versions, keys, GPUs, interrupts."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import remotecell as rc
import remotecell._client as client_mod
import zmq
from conftest import Runtime, run_script, wait_for
from remotecell import exceptions
from remotecell_runtime.protocol import framing

_RAW = zmq.Context()  # test-only sockets; destroyed at exit so nothing blocks on term()
atexit.register(_RAW.destroy, linger=0)


def _raw_socket(address: str, **curve: bytes) -> zmq.Socket:
    sock = _RAW.socket(zmq.DEALER)
    sock.linger = 0
    for key, value in curve.items():
        setattr(sock, key, value)
    sock.connect(address)
    return sock


def _reply(sock: zmq.Socket, timeout_ms: int = 5000) -> dict | None:
    if not sock.poll(timeout_ms):
        return None
    header, _ = framing.decode(sock.recv_multipart())
    return header


def test_malformed_messages_leave_the_runtime_serving(app, runtime):
    address = runtime.info["endpoints"][0]
    sock = _raw_socket(address)
    bad_messages = [
        [b"just one frame"],
        [b"not-rc", b"{}"],
        [b"rc/9", b'{"t": "hello", "id": "x"}'],
        [framing.PROTOCOL, b"{not json"],
        [framing.PROTOCOL, b'["a list"]'],
        [framing.PROTOCOL, b'{"t": "no_such_type", "id": "u1"}'],
        [framing.PROTOCOL, b'{"t": "call", "id": "c1", "fid": "nope", "p": [{"n": 5}]}', b"x"],
        [framing.PROTOCOL,
         b'{"t": "call", "id": "c2", "fid": "nope", "p": [{"n": 2, "shm": [[1, "../../etc/passwd", 3]]}]}',
         b"x", b""],
        [framing.PROTOCOL, b'{"t": "app_stop", "id": "s1"}'],
        [framing.PROTOCOL, b'{"t": "fn_lookup", "id": "s2", "name": "f"}'],
        [framing.PROTOCOL, b'{"t": "queue_get", "id": "s3", "oid": "seven"}'],
        [framing.PROTOCOL, b'{"t": "call", "id": "c3", "fid": "nope", "p": [{"n": 1}]}', b"\x80garbage pickle"],
    ]
    for frames in bad_messages:
        sock.send_multipart(frames)
    replies = []
    while (reply := _reply(sock, 1000)) is not None:
        replies.append(reply)
    by_id = {r.get("id"): r for r in replies}
    assert len(replies) == len(bad_messages)  # each one answered with an error, none dropped silently
    assert all(r["t"] == "error" for r in replies if r.get("id") != "c3")
    assert by_id["u1"]["t"] == "error" and "unknown message type" in by_id["u1"]["error"]["message"]
    assert "does not match" in by_id["c1"]["error"]["message"]
    assert "malformed" in by_id["c2"]["error"]["message"]
    assert "app_stop needs 'app_id'" in by_id["s1"]["error"]["message"]
    assert by_id["s2"]["error"]["message"] == "a 'fn_lookup' message needs 'app'"  # named fields, checked
    assert by_id["s3"]["error"]["message"] == "'queue_get' field 'oid' must be an integer, got 'seven'"
    assert by_id["c3"]["error"]["type"] == "NotFoundError"
    assert not os.path.exists("/dev/shm/../../etc/passwd.rc")  # names are never resolved outside /dev/shm
    assert runtime.alive()

    @app.function()
    def still_fine(x):
        return x + 1

    assert still_fine.remote(1) == 2
    # garbage arguments reach the container, which reports them and keeps serving
    conn, fid = still_fine.fid()
    sock.send_multipart([framing.PROTOCOL, json.dumps({"t": "call", "id": "g1", "fid": fid, "sid": conn.sid,
                                                     "p": [{"n": 1}]}).encode(), b"\x80garbage"])
    reply = _reply(sock)
    assert reply["t"] == "result" and reply["status"] == "error"
    assert "Unpickling" in reply["error"]["type"] or "pickle" in reply["error"]["message"]
    assert still_fine.remote(2) == 3


def test_unauthorized_tcp_clients_execute_nothing(tmp_path, new_home):
    state = new_home("state")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    token = _token(state, "alice", address)
    rt = Runtime(state, binds=[address])
    try:
        marker = tmp_path / "ran"
        server_key = json.loads(token.read_text())["server_key"].encode()
        # 1. no key at all: a plain socket to a CURVE listener gets nowhere
        plain = _raw_socket(address)
        plain.send_multipart(framing.encode({"t": "hello", "id": "p1", "versions": {}}))
        assert _reply(plain, 1500) is None
        # 2. a well-formed key the runtime does not know
        public, secret = zmq.curve_keypair()
        stranger = _raw_socket(address, curve_serverkey=server_key, curve_publickey=public, curve_secretkey=secret)
        stranger.send_multipart(framing.encode({"t": "app_create", "id": "s1", "sid": "x", "name": "evil"}))
        assert _reply(stranger, 1500) is None
        # 3. the SDK says why
        wrong = dict(json.loads(token.read_text()), client_public=public.decode(), client_secret=secret.decode())
        wrong_file = _private_json(tmp_path / "wrong.json", wrong)
        result = run_script(_touch_script(marker), env={"REMOTECELL_RUNTIME": str(wrong_file)}, tmp_path=tmp_path)
        assert "refused this client's key" in result.stderr
        result = run_script(_touch_script(marker), env={"REMOTECELL_RUNTIME": address}, tmp_path=tmp_path)
        assert "needs a token" in result.stderr
        assert not marker.exists()
        # 4. the right key works, through the socket path (no shared memory over tcp)
        result = run_script(_touch_script(marker), env={"REMOTECELL_RUNTIME": str(token)}, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert marker.exists() and "shm=False" in result.stdout and "sum=49999995000000" in result.stdout
        # 5. a revoked token stops working
        subprocess.run([sys.executable, "-m", "remotecell_runtime", "token", "revoke", "alice",
                        "--state-dir", str(state)], check=True, capture_output=True)
        marker.unlink()

        def refused() -> bool:
            r = run_script(_touch_script(marker), env={"REMOTECELL_RUNTIME": str(token),
                                                       "REMOTECELL_HELLO_TIMEOUT_S": "2"}, tmp_path=tmp_path)
            return r.returncode != 0 and "refused this client's key" in r.stderr

        wait_for(refused, timeout_s=20, what="the revoked token to be refused")
        marker.unlink(missing_ok=True)
        assert refused() and not marker.exists()
        assert rt.alive()
    finally:
        rt.stop()


def test_tcp_listener_refused_without_keys(new_home):
    result = subprocess.run(
        [sys.executable, "-m", "remotecell_runtime", "serve", "--bind", f"tcp://127.0.0.1:{_free_port()}",
         "--state-dir", str(new_home("s"))], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "refusing to listen on tcp:// without client keys" in result.stderr
    assert "remotecell token new" in result.stderr


def test_a_second_runtime_on_one_state_folder_is_refused_and_the_first_serves_on(new_home):
    state = new_home("busy")
    rt = Runtime(state)
    try:
        result = subprocess.run([sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(state)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert f"another runtime serves {state} already" in result.stderr and "remotecell stop" in result.stderr
        assert rt.alive() and (state / "sock" / "runtime.sock.stream").exists()  # its sockets left alone
        status = subprocess.run([sys.executable, "-m", "remotecell.cli", "status"], capture_output=True, text=True,
                                timeout=60, env=dict(os.environ, REMOTECELL_HOME=str(state)))
        assert f"pid {rt.proc.pid}" in status.stdout, status.stderr
    finally:
        rt.stop()


def test_loose_key_permissions_are_refused(tmp_path, new_home):
    state = new_home("s")
    _token(state, "bob", None)
    secret = state / "keys" / "server.key_secret"
    secret.chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(state)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"chmod 600 {secret}" in result.stderr


def test_local_runtime_autostarts_once_and_is_reused(tmp_path, new_home):
    home = new_home("home")
    env = {"REMOTECELL_HOME": str(home)}
    env_all = dict(os.environ, **env)
    env_all.pop("REMOTECELL_RUNTIME", None)
    code = (
        "import remotecell as rc, remotecell._client as c\n"
        "app = rc.App('auto')\n"
        "@app.function()\n"
        "def f(x):\n    return x * 3\n"
        "print(f.remote(2), c.connection().runtime_id)\n"
    )
    script = tmp_path / "client.py"
    script.write_text(code)
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env_all) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    try:
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        runtime_ids = {o[0].split()[1] for o in outs}
        assert {o[0].split()[0] for o in outs} == {"6"}
        assert len(runtime_ids) == 1  # three racing processes, one runtime
        info = json.loads((home / "connection.json").read_text())
        assert (home / "connection.json").stat().st_mode & 0o777 == 0o600
        assert (home / "sock").stat().st_mode & 0o777 == 0o700
        later = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env_all, timeout=60)
        assert later.stdout.split()[1] in runtime_ids
        status = subprocess.run([sys.executable, "-m", "remotecell.cli", "status"], capture_output=True,
                                text=True, env=env_all, timeout=60)
        assert f"pid {info['pid']}" in status.stdout
    finally:
        stop = subprocess.run([sys.executable, "-m", "remotecell.cli", "stop"], capture_output=True, text=True,
                              env=env_all, timeout=60)
    assert "stopped the local runtime" in stop.stdout
    assert not (home / "connection.json").exists()


def test_version_mismatch_fails_fast_with_a_hint(runtime, monkeypatch):
    real = client_mod.versions()
    monkeypatch.setattr(client_mod, "versions", lambda: dict(real, cloudpickle="0.0.1"))
    client_mod.reset_connection()
    try:
        with pytest.raises(exceptions.VersionMismatchError, match=r"cloudpickle .* there, 0\.0\.1 here.*pip install"):
            client_mod.connection()
    finally:
        monkeypatch.undo()
        client_mod.reset_connection()
    with pytest.raises(exceptions.VersionMismatchError, match="Python 3.99"):
        client_mod.check_versions(dict(real, python="3.11.1"), dict(real, python="3.99.0"), "x")


def test_gpu_requests_against_a_fake_inventory(tmp_path, monkeypatch, new_home):
    state = new_home("gpu-home")
    rt = Runtime(state, env={"REMOTECELL_FAKE_GPUS": "H100,H100"})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        app = rc.App("gpus")

        @app.function(gpu="any")
        def visible():
            return os.environ["CUDA_VISIBLE_DEVICES"]

        @app.function(gpu="A100")
        def impossible():
            return 1

        @app.function(gpu="H100", max_containers=4)
        def hold(path):
            deadline = time.monotonic() + 20
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.01)
            return os.environ["CUDA_VISIBLE_DEVICES"], os.environ["REMOTECELL_TASK_ID"]

        with app.run():
            taken = visible.remote()  # its warm container keeps that GPU
            assert taken in ("0", "1")
            expected = r"gpu='A100' cannot be met: this host has 0: H100, 1: H100"
            with pytest.raises(exceptions.InvalidError, match=expected):
                impossible.remote()
            # Three inputs want three containers, but only one H100 is free: one container
            # starts, the others wait (and say why); `visible`'s idle container is stopped early
            # to free the other H100. No device is ever given to two containers.
            release = tmp_path / "release"

            async def three_at_once():
                return await asyncio.gather(*(hold.remote.aio(str(release)) for _ in range(3)))

            def waiting_for_gpu() -> bool:
                return hold.stats().get("waiting_reason", "").startswith("waiting for a GPU")

            task = threading.Thread(target=lambda: results.extend(asyncio.run(three_at_once())))
            results: list = []
            task.start()
            wait_for(waiting_for_gpu, what="an input queued for lack of a free GPU")
            release.touch()
            task.join(30)
            assert len(results) == 3
            device_of = {pid: device for device, pid in results}
            assert len(set(device_of.values())) == len(device_of) <= 2
            # Both GPUs are now held by idle containers (60 s scale-down window): a third
            # function that needs both gets them by stopping those idle containers early.

            @app.function(gpu="any:2")
            def both():
                return os.environ["CUDA_VISIBLE_DEVICES"]

            start = time.monotonic()
            assert both.remote() == "0,1"
            assert time.monotonic() - start < 20
    finally:
        client_mod.reset_connection()
        rt.stop()


def test_option_validation_names_value_and_range():
    app = rc.App("opts")
    cases = [
        (dict(timeout=0), r"timeout=0 is out of range: allowed 1 to 86400"),
        (dict(max_containers=0), r"max_containers=0 is out of range: allowed 1 to 1000"),
        (dict(scaledown_window=1), r"scaledown_window=1 is out of range: allowed 2 to 3600"),
        (dict(min_containers=5, max_containers=2), r"min_containers=5 is more than max_containers=2"),
        (dict(gpu="H100:99"), r"not a GPU spec"),
        (dict(gpu=3), r"gpu=3 must be a string"),
        (dict(retries=11), r"retries=11 is out of range: allowed 0 to 10"),
        (dict(gpus="any"), r"unknown function option\(s\) \['gpus'\]"),
        (dict(env={"A": 1}), r"must be a dict of str to str"),
    ]
    for options, message in cases:
        with pytest.raises(exceptions.InvalidError, match=message):
            app.function(**options)
    with pytest.raises(exceptions.InvalidError, match=r"backoff_coefficient=0.5 is out of range"):
        rc.Retries(max_retries=2, backoff_coefficient=0.5)
    f = app.function(cpu=2.0, memory=1024, ephemeral_disk=1024, serialized=True)(lambda: 1)
    assert f.options["memory_mib"] == 1024 and f.options["cpu"] == 2.0 and f.options["ephemeral_disk_mib"] == 1024
    assert f.options["not_in_effect"] == []  # serialized= has no effect here, and says nothing
    with pytest.raises(exceptions.InvalidError, match=r"ephemeral_disk=0"):
        app.function(ephemeral_disk=0)
    with pytest.raises(exceptions.InvalidError, match=r"cpu=0 must be|cpu=0 is out of range"):
        app.function(cpu=0)


def test_ctrl_c_cancels_the_remote_call_and_the_next_call_works(runtime, tmp_path):
    started = tmp_path / "started"
    script = tmp_path / "interrupt.py"
    script.write_text(f"""
import os, time, remotecell as rc
app = rc.App("interrupt")

@app.function()
def slow(path):
    open(path, "w").close()
    time.sleep(60)
    return "finished"

@app.function()
def quick():
    return "next call ok"

try:
    slow.remote({str(started)!r})
except KeyboardInterrupt:
    print("interrupted locally")
print(quick.remote())
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(started.exists, timeout_s=30, what="the remote call to start")
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "interrupted locally" in out and "next call ok" in out
    assert "cancelled the remote call to slow" in err
    assert time.monotonic() - start < 10


# -- helpers --------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token(state: Path, name: str, address: str | None) -> Path:
    cmd = [sys.executable, "-m", "remotecell_runtime", "token", "new", name, "--state-dir", str(state)]
    if address:
        cmd += ["--address", address]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return state / "tokens" / f"{name}.json"


def _private_json(path: Path, data: dict) -> Path:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return path


def _touch_script(marker: Path) -> str:
    return f"""
import numpy as np, remotecell as rc, remotecell._client as c
app = rc.App("tcp")

@app.function()
def touch(a):
    open({str(marker)!r}, "w").close()
    return a.sum(dtype="int64")

total = touch.remote(np.arange(10_000_000, dtype=np.int64))
print(f"shm={{c.connection().shm}} sum={{total}}")
"""


@pytest.mark.parametrize("form", ["remote", "remote.aio"])
def test_a_call_fails_plainly_when_a_runtime_not_ours_dies_under_it_and_it_is_not_restarted(tmp_path, form,
                                                                                            new_home):
    call = f"wait_long.remote({str(tmp_path / 'started')!r})"
    if form == "remote.aio":
        call = f"asyncio.run(wait_long.remote.aio({str(tmp_path / 'started')!r}))"
    state = new_home("dying-home")
    rt = Runtime(state)
    started = tmp_path / "started"
    script = tmp_path / "waiting.py"
    script.write_text(f"""
import asyncio, time, remotecell as rc
app = rc.App("orphan")

@app.function()
def wait_long(path):
    open(path, "w").close()
    time.sleep(120)

try:
    {call}
except rc.exceptions.ConnectionError as e:
    print("gave up:", e)
""")
    address = f"ipc://{state / 'sock' / 'runtime.sock'}"
    env = dict(os.environ, REMOTECELL_RUNTIME=address, REMOTECELL_RUNTIME_GONE_S="3",
               REMOTECELL_HOME=str(tmp_path / "elsewhere"))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        wait_for(started.exists, timeout_s=30, what="the call to start")
        rt.proc.kill()
        out, err = proc.communicate(timeout=30)
    finally:
        rt.stop()
    assert proc.returncode == 0, err
    assert f"gave up: the runtime at {address}" in out and "has not answered" in out
    assert "REMOTECELL_RUNTIME names" in out and "remotecell serve" in out  # where it was, how to start it
    assert json.loads((state / "connection.json").read_text())["pid"] == rt.proc.pid  # nobody started another
    assert not (tmp_path / "elsewhere" / "connection.json").exists()


PHOENIX = """
import os, sys, time
import remotecell as rc
from remotecell import _client

app = rc.App("phoenix")

@app.function()
def inc(x):
    return x + 1

@app.function()
def wait_long(path):
    open(path, "w").close()
    time.sleep(120)

@app.function()
def gated(gate):
    while not os.path.exists(gate):
        time.sleep(0.01)
    return "gated done"

with app.run():
    print(inc.remote(1), _client.connection().info.pid, flush=True)
    pending = gated.spawn({gate!r})
    began = time.monotonic()
    try:
        wait_long.remote({started!r})
    except rc.exceptions.RuntimeRestarted as e:
        print("in flight:", round(time.monotonic() - began), e, flush=True)
    print(inc.remote(2), _client.connection().info.pid, flush=True)  # the next call: on the new runtime
    print(pending.get(timeout=60), flush=True)  # the spawned call resumed there
    sys.stdin.readline()  # the test kills the runtime again, between two calls this time, and waits
    print(inc.remote(5), _client.connection().info.pid, flush=True)
"""


def _kill_runtime(state: Path) -> int:
    pid = json.loads((state / "connection.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _dead(pid), timeout_s=10, what=f"runtime {pid} to die")
    return pid


def _dead(pid: int) -> bool:
    """Gone, or a zombie (its parent, the client that started it, reaps it later)."""
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:  # reaped meanwhile
        return True


def test_the_local_runtime_comes_back_after_a_crash_and_the_apps_calls_go_on(tmp_path, new_home):
    state, started, gate = new_home("phoenix"), tmp_path / "started", tmp_path / "gate"
    script = tmp_path / "phoenix.py"
    script.write_text(PHOENIX.format(gate=str(gate), started=str(started)))
    env = dict(os.environ, REMOTECELL_HOME=str(state), REMOTECELL_RUNTIME_GONE_S="60")
    env.pop("REMOTECELL_RUNTIME", None)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        value, first_pid = proc.stdout.readline().split()
        assert value == "2"
        wait_for(started.exists, timeout_s=30, what="the long call to start")
        assert _kill_runtime(state) == int(first_pid)  # SIGKILL: an OOM kill looks the same from here
        in_flight = proc.stdout.readline()
        assert in_flight.startswith("in flight:"), proc.stderr.read() if proc.poll() is not None else in_flight
        assert int(in_flight.split()[2]) < 10  # at once, not after a heartbeat deadline (60 s here)
        value, second_pid = proc.stdout.readline().split()
        assert value == "3" and second_pid != first_pid
        gate.touch()
        assert proc.stdout.readline().strip() == "gated done"
        second = _kill_runtime(state)
        # no call now: the client sees the crash by itself (its heartbeat) and starts the runtime again
        wait_for(lambda: json.loads((state / "connection.json").read_text())["pid"] != second, timeout_s=30,
                 what="the client to start the crashed runtime again")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (proc.returncode, out, err)
        value, third_pid = out.split()
        assert value == "6" and third_pid not in (first_pid, second_pid)
        assert "the local runtime (pid" in err and "died; starting it again" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([sys.executable, "-m", "remotecell.cli", "stop"], env=env, capture_output=True, timeout=60)


def test_a_container_whose_daemon_is_gone_exits_even_when_its_parent_lives_on(tmp_path):
    """The cancel pipe is the lifeline: its other end closes with the daemon, whatever became of the
    process between them (a sandbox's bwrap that missed its parent's death, say)."""
    cancel_r, cancel_w = os.pipe()
    container = subprocess.Popen(
        [sys.executable, "-m", "remotecell_runtime.container", "--connect", f"ipc://{tmp_path}/nobody.sock",
         "--id", "c-lifeline", "--cancel-fd", str(cancel_r), "--direct", str(tmp_path / "c.sock")],
        pass_fds=(cancel_r,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(cancel_r)
    try:
        wait_for(lambda: (tmp_path / "c.sock").exists(), timeout_s=30, what="the container to start serving")
        assert container.poll() is None, "with its daemon's end of the pipe open, the container serves on"
        os.close(cancel_w)  # the daemon is gone
        assert container.wait(timeout=10) is not None
    finally:
        container.kill()
        container.wait()


REVOKED_CLIENT = """
import sys, threading, time
import remotecell as rc

app = rc.App("revoked-app")

@app.function()
def inc(x):
    return x + 1

@app.function()
def slow(s):
    time.sleep(s)

outcome = {}

def in_flight():
    try:
        slow.remote(60)
    except rc.exceptions.AuthError as e:
        outcome["in flight"] = e

with app.run():
    print(inc.remote(1), flush=True)
    waiting = threading.Thread(target=in_flight)
    waiting.start()
    sys.stdin.readline()  # the token is revoked now
    time.sleep(1.0)  # the runtime reads its allowlist again every tick (0.5 s): a second is its promise
    began = time.monotonic()
    try:
        inc.remote(2)
    except rc.exceptions.AuthError as e:
        print(round(time.monotonic() - began, 1), e, flush=True)
    waiting.join(30)
    print("in flight:", outcome.get("in flight"), flush=True)
"""


def test_revoking_a_token_cuts_its_connected_client_within_a_second(tmp_path, new_home):
    state = new_home("revoking")
    address = f"tcp://127.0.0.1:{_free_port()}"
    token = _token(state, "mallory", address)
    rt = Runtime(state, binds=[f"ipc://{state / 'sock' / 'runtime.sock'}", address])  # ipc: the operator's own
    script = tmp_path / "revoked.py"
    script.write_text(REVOKED_CLIENT)
    env = dict(os.environ, REMOTECELL_RUNTIME=str(token))
    client = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    admin = dict(os.environ, REMOTECELL_HOME=str(state))
    admin.pop("REMOTECELL_RUNTIME", None)
    try:
        assert client.stdout.readline().strip() == "2"
        apps = run_script("import remotecell as rc; print([a['name'] for a in rc.status()['apps']])", env=admin,
                          tmp_path=tmp_path)
        assert "revoked-app" in apps.stdout, apps.stderr
        subprocess.run([sys.executable, "-m", "remotecell_runtime", "token", "revoke", "mallory",
                        "--state-dir", str(state)], check=True, capture_output=True)
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=60)
        refused, in_flight = out.strip().splitlines()
        seconds, message = refused.split(" ", 1)
        assert float(seconds) < 0.5, out  # refused at once, not after a timeout
        assert "token was revoked" in message and "remotecell token new" in message
        assert "refuses this client" in in_flight and "token was revoked" in in_flight, (out, err)

        def app_gone() -> bool:
            r = run_script("import remotecell as rc; print([a['name'] for a in rc.status()['apps']])", env=admin,
                           tmp_path=tmp_path)
            return "revoked-app" not in r.stdout

        wait_for(app_gone, timeout_s=10, what="the revoked client's ephemeral app to be stopped")
        assert rt.alive()
    finally:
        if client.poll() is None:
            client.kill()
        rt.stop()
