"""Socket lifecycle: blocking calls from many threads use a bounded number of sockets, closed when threads end.

Each thread that makes blocking calls gets a channel (a socket of its own, and
those of its leases) up to a cap; threads beyond it share one multiplexed
socket. A channel is closed when its thread ends, so the client's and the
daemon's open files come back to where they were.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import Runtime, wait_for

THREADS = 1000
SLACK_FDS = 6  # "within a few": a lazily made socket or pipe of the runtime's own may come and go


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(300)
def test_a_thousand_threads_call_remote_and_their_sockets_are_closed(app, runtime):
    @app.function(max_containers=1)
    def inc(x):
        return x + 1

    assert inc.remote(0) == 1  # registered, its container warm (and leased to this thread)
    client_before, daemon_before = open_fds(), open_fds(runtime.proc.pid)

    results: list[object] = [None] * THREADS
    start = threading.Barrier(THREADS)

    def call(i: int) -> None:
        start.wait()  # all at once: 1,000 callers waiting together
        try:
            results[i] = inc.remote(i)
        except BaseException as exc:  # the assertion below names it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads)

    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of {THREADS} calls failed, the first with {failed[0]!r}"
    assert results == [i + 1 for i in range(THREADS)]

    wait_for(lambda: open_fds() <= client_before + SLACK_FDS, timeout_s=30,
             what=f"the client's open files to come back to {client_before} (now {open_fds()})")
    wait_for(lambda: open_fds(runtime.proc.pid) <= daemon_before + SLACK_FDS, timeout_s=30,
             what=f"the daemon's open files to come back to {daemon_before} (now {open_fds(runtime.proc.pid)})")
    assert inc.remote(41) == 42  # and this thread's channel still works


RESTARTING_CLIENT = """
import sys, time
import remotecell as rc
from remotecell import _client

app = rc.App("stream-restart")

@app.function()
def inc(x):
    return x + 1

with app.run():
    print(inc.remote(1), type(_client.connection().channel().wire).__name__, flush=True)
    first = _client.connection().runtime_id
    sys.stdin.readline()  # the test kills the runtime and starts another meanwhile
    deadline = time.monotonic() + 60
    while _client.connection().runtime_id == first:  # the heartbeat finds the new one; the app registers again
        assert time.monotonic() < deadline, "the client never saw the new runtime"
        time.sleep(0.05)
    print(inc.remote(2), inc.spawn(3).get(timeout=60), type(_client.connection().channel().wire).__name__,
          flush=True)
"""


def test_a_local_clients_blocking_calls_use_its_stream_connection_and_outlive_a_runtime_crash(tmp_path, new_home):
    state = new_home("stream-restart")
    env = dict(os.environ, REMOTECELL_HOME=str(state))
    env.pop("REMOTECELL_RUNTIME", None)
    rt = Runtime(state)
    script = tmp_path / "client.py"
    script.write_text(RESTARTING_CLIENT)
    client = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert client.stdout.readline().split() == ["2", "StreamWire"]
        assert (state / "sock" / "runtime.sock.stream").exists()
        rt.proc.send_signal(signal.SIGKILL)  # a crash: its end of every stream connection closes with it
        rt.proc.wait(10)
        rt.log.close()
        rt = Runtime(state)  # it takes the stream socket the dead one left
        client.stdin.write("go\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        assert out.split() == ["3", "4", "StreamWire"]
    finally:
        if client.poll() is None:
            client.kill()
        rt.stop()
