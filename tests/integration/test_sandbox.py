"""Containers in bubblewrap sandboxes (REMOTECELL_SANDBOX=1): what user code sees, and what still works."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import remotecell as rc
from conftest import Runtime, wait_for
from remotecell import _client as client_mod
from remotecell import exceptions


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    """A runtime whose containers run sandboxed; the client talks to it for this module."""
    state = tmp_path_factory.mktemp("sandboxed") / "home"
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "1"})
    old = os.environ.get("REMOTECELL_HOME")
    os.environ["REMOTECELL_HOME"] = str(state)
    client_mod.reset_connection()
    yield rt
    client_mod.reset_connection()
    rt.stop()
    if old is not None:
        os.environ["REMOTECELL_HOME"] = old


def test_the_status_says_containers_are_sandboxed(sandboxed):
    assert rc.status()["sandbox"].startswith("bubblewrap")


def test_user_code_sees_neither_the_runtimes_state_nor_the_hosts_files(sandboxed, tmp_path):
    (sandboxed.state_dir / "secret-marker").write_text("keys live here")
    host_file = tmp_path / "host-only.txt"
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
    assert volume.read_file("note.txt") == b"hello"


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
