"""Containers in bubblewrap sandboxes (the default where bwrap works): what user code sees, and what still works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import remotecell as rc
from conftest import Runtime, cli, wait_for
from remotecell import _client as client_mod
from remotecell import exceptions


def test_the_status_says_containers_are_sandboxed(sandboxed):
    assert rc.status()["sandbox"].startswith("bubblewrap")


def test_user_code_sees_neither_the_runtimes_state_nor_the_hosts_files(sandboxed, new_home):
    (sandboxed.state_dir / "secret-marker").write_text("keys live here")
    host_file = new_home("unshared") / "host-only.txt"  # not under the pytest folders, which are shared
    host_file.write_text("on the host")
    app = rc.App("sandbox-view")

    @app.function()
    def look(state: str, host_path: str):
        with open("/tmp/mine", "w") as f:
            f.write("x")
        return {"state": sorted(os.listdir(state)), "host_file": os.path.exists(host_path),
                "home": os.environ["HOME"], "cwd": os.getcwd(), "home_files": os.listdir(os.environ["HOME"]),
                "pid1": open("/proc/1/cmdline").read().split("\0")[0]}

    with app.run():
        seen = look.remote(str(sandboxed.state_dir), str(host_file))
    assert seen["state"] == ["sock"]  # keys, tokens and databases are not there; the sockets are
    assert not seen["host_file"]
    assert seen["home"] == seen["cwd"] == "/root"
    assert not Path("/tmp/mine").exists()  # its /tmp was its own
    assert os.path.basename(seen["pid1"]) == "bwrap"  # its own pid namespace: no other process is visible


def test_calls_stores_and_cancel_work_inside(sandboxed):
    app = rc.App("sandbox-work")

    @app.function()
    def store(x):
        d = rc.Dict.from_name("sandbox-d", create_if_missing=True)  # the container's own client of this runtime
        d["x"] = x
        return d["x"] * 2

    @app.function()
    def slow():
        time.sleep(60)

    with app.run():
        assert store.remote(21) == 42
        call = slow.spawn()
        wait_for(lambda: call.status()["state"] == "running", what="the slow call to run")
        begin = time.monotonic()
        call.cancel()
        with pytest.raises(exceptions.InputCancelled):
            call.get(timeout=30)
        wait_for(lambda: slow.stats()["running"] == 0, what="the container to stop running it")
        assert time.monotonic() - begin < 20  # the interrupt reached the container, not only bwrap


def test_a_crash_inside_is_seen_as_its_signal(sandboxed):
    app = rc.App("sandbox-crash")

    @app.function(retries=0)
    def crash():
        os.kill(os.getpid(), signal.SIGKILL)  # not pid 1 of its namespace: the kill takes

    with app.run():
        with pytest.raises(Exception, match="SIGKILL"):
            crash.remote()


def test_volumes_are_mounted_at_their_path_inside_only(sandboxed):
    app = rc.App("sandbox-volume")
    volume = rc.Volume.from_name("sandbox-vol", create_if_missing=True)

    @app.function(volumes={"/data": volume})
    def write(text):
        with open("/data/note.txt", "w") as f:
            f.write(text)
        return os.path.islink("/data"), sorted(os.listdir("/data"))

    @app.function(volumes={"/data": volume})
    def read():
        with open("/data/note.txt") as f:
            return f.read()

    with app.run():
        assert write.remote("hello") == (False, ["note.txt"])  # a mount, not a link
        assert read.remote() == "hello"
    assert not os.path.lexists("/data")  # nothing left on the host's tree
    assert b"".join(volume.read_file("note.txt")) == b"hello"


def test_containers_have_distinct_task_ids(sandboxed):
    app = rc.App("sandbox-ids")

    @app.function(max_containers=2)
    def whoami(wait_s):
        time.sleep(wait_s)
        return os.environ["REMOTECELL_TASK_ID"], os.getpid()

    with app.run():
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(whoami.remote(1.0))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    ids = {task for task, _ in results}
    assert len(results) == 2 and len(ids) == 2  # two containers ...
    assert {pid for _, pid in results} == {2}  # ... each the one process under its sandbox's init


def test_block_network_leaves_a_container_no_network(sandboxed):
    app = rc.App("sandbox-net")

    def interfaces():
        import socket

        return sorted(name for _, name in socket.if_nameindex())

    offline = app.function(block_network=True, name="offline")(interfaces)
    online = app.function(name="online")(interfaces)
    with app.run():
        assert offline.remote() == ["lo"]  # only its own loopback
        assert len(online.remote()) > 1


def test_shared_folders_are_read_write_at_their_own_paths(sandboxed, tmp_path):
    note = tmp_path / "note.txt"  # the conftest's runtimes share the pytest folders (REMOTECELL_SHARE)
    note.write_text("host;")
    app = rc.App("sandbox-share")

    @app.function()
    def append(path: str):
        with open(path, "a") as f:
            f.write("container")
        with open(path) as f:
            return f.read()

    with app.run():
        assert append.remote(str(note)) == "host;container"
    assert note.read_text() == "host;container"
    assert f"sharing {os.environ['REMOTECELL_SHARE']}" in rc.status()["sandbox"]


def test_a_share_that_holds_the_state_folder_is_refused(tmp_path):
    state = tmp_path / "home"
    done = subprocess.run([sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(state),
                           "--share", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "REMOTECELL_SHARE"})
    assert done.returncode == 2
    assert f"shared folder {tmp_path}: it holds or lies in the runtime's state folder" in done.stderr
    assert not (state / "connection.json").exists()


def test_remotecell_sandbox_0_turns_it_off_and_the_status_says_so(new_home):
    state = new_home("unsandboxed")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "0"})
    try:
        done = cli("status", env={"REMOTECELL_HOME": str(state)})
        assert done.returncode == 0, done.stderr
        assert "containers sandboxed: off: REMOTECELL_SANDBOX=0: containers run as plain processes" in done.stdout
        assert "sandbox off: REMOTECELL_SANDBOX=0" in rt.log_text()
    finally:
        rt.stop()


def test_big_results_of_two_containers_never_share_a_segment_name(sandboxed):
    app = rc.App("sandbox-shm")

    @app.function()
    def ones(n):
        return np.ones(n, dtype=np.float32)

    @app.function()
    def twos(n):
        return np.full(n, 2, dtype=np.float32)

    with app.run():  # both are pid 2 in their sandboxes; their segments in the one /dev/shm must not clash
        a = ones.remote(1_000_000)  # 4 MB: through shared memory, held here while the other sends
        b = twos.remote(1_000_000)
    assert a.sum() == 1_000_000 and b.sum() == 2_000_000


def test_an_idle_container_stays_though_its_parent_is_pid_1(sandboxed):
    app = rc.App("sandbox-idle")

    @app.function()
    def whoami():
        return os.environ["REMOTECELL_TASK_ID"], os.getppid()

    with app.run():
        first, parent = whoami.remote()
        time.sleep(2.5)  # idle past its 1 s polls, each of which asks whether its daemon is gone
        assert whoami.remote() == (first, parent) and parent == 1  # the same container, under bwrap's init


def test_without_bubblewrap_the_runtime_warns_and_the_status_says_how_to_fix(new_home, tmp_path):
    state = new_home("no-bwrap")
    rt = Runtime(state, env={"PATH": str(tmp_path), "REMOTECELL_SANDBOX": "1"})  # no bwrap there
    try:
        done = cli("status", env={"REMOTECELL_HOME": str(state)})
        assert "containers sandboxed: off: bubblewrap (bwrap) is not installed; install it" in done.stdout
        assert "WARNING remotecell.runtime: sandbox off: bubblewrap (bwrap) is not installed" in rt.log_text()
    finally:
        rt.stop()


def test_a_container_sees_exactly_its_gpus_device_files(tmp_path, monkeypatch, new_home):
    """Fake inventory and stand-in device files: what the sandbox binds is what the real path binds."""
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (devices / name).touch()
    state = new_home("gpu-devices")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "1", "REMOTECELL_FAKE_GPUS": "H100,H100",
                             "REMOTECELL_FAKE_GPU_DEVICES": str(devices)})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        if rc.status()["sandbox"].startswith("off:"):
            pytest.skip("no sandbox on this host")
        app = rc.App("gpu-devices")

        def nvidia_files():
            return os.environ["CUDA_VISIBLE_DEVICES"], sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))

        one = app.function(gpu="H100", name="one")(nvidia_files)
        both = app.function(gpu="H100:2", name="both")(nvidia_files)
        none = app.function(name="none")(nvidia_files)
        with app.run():
            visible, files = one.remote()
            assert files == sorted([f"nvidia{visible}", "nvidia-uvm", "nvidiactl"])
        with app.run():  # the first run's containers are gone: both GPUs are free
            assert both.remote() == ("0,1", ["nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl"])
            assert none.remote() == ("", [])
    finally:
        client_mod.reset_connection()
        rt.stop()


def test_ephemeral_disk_caps_what_a_container_may_write(sandboxed):
    app = rc.App("sandbox-disk")

    def write(path: str, mib: int) -> str:
        try:
            with open(path, "wb") as f:
                for _ in range(mib):
                    f.write(b"\0" * (1 << 20))
        except OSError as exc:
            return f"{exc.errno} {exc.strerror}"
        finally:
            os.remove(path)
        return "ok"

    small = app.function(ephemeral_disk=16, name="small_disk")(write)
    roomy = app.function(name="roomy_disk")(write)
    with app.run():
        assert small.remote("/tmp/fits", 8) == "ok"
        assert small.remote("/tmp/too-big", 32) == "28 No space left on device"
        assert small.remote("/root/too-big", 32) == "28 No space left on device"  # the home as well
        assert roomy.remote("/tmp/big", 32) == "ok"
