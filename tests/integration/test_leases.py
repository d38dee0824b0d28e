"""Leases: a blocking caller's warm calls go straight to a lent container, and nothing is lost on the way.

Each test first makes one call through the runtime (which lends the container to
this thread), checks the lease is held, and then makes the calls it is about.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
import threading
import time

import numpy as np
import pytest
import remotecell as rc
from conftest import host_pid, wait_for
from remotecell import _invocation, exceptions
from remotecell_runtime.protocol import framing, pickling, sharedmem
from remotecell_runtime.protocol.messages.calls import CallMsg
from remotecell_runtime.protocol.stream import StreamConn


def _lease(fn: rc.Function) -> _invocation.HeldLease | None:
    conn, fid = fn.fid()
    return _invocation.leases_of(conn.channel()).held.get(fid)


def _leased(fn: rc.Function) -> _invocation.HeldLease:
    """Warm ``fn`` up (one call through the runtime) and return the lease that call brought."""
    fn.remote(0)
    lease = _lease(fn)
    assert lease is not None, "a warm blocking call should hold a lease on its container"
    return lease


def test_warm_calls_go_straight_to_the_leased_container(app):
    @app.function()
    def where(x):
        return os.environ["REMOTECELL_TASK_ID"], x + 1

    lease = _leased(where)
    results = [where.remote(i) for i in range(50)]
    assert [x for _, x in results] == list(range(1, 51))
    assert len({pid for pid, _ in results}) == 1
    assert _lease(where) is lease  # every one of them went direct: the lease was never given up
    stats = where.stats()
    assert stats["leased"] == 1 and stats["containers"] == {"idle": 1} and stats["running"] == 0
    status = rc.status()
    line = next(line for line in repr(status).splitlines() if line.strip().startswith(f"{stats['function']}:"))
    assert "1 idle (1 leased)" in line
    assert "<th>leased</th>" in status._repr_html_()


def test_a_stranger_on_the_containers_socket_gets_nothing_and_breaks_nothing(app):
    @app.function()
    def inc(x):
        return x + 1

    lease = _leased(inc)
    path = lease.sock.sock.getpeername()
    garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    garbage.connect(path)
    garbage.sendall(struct.pack("<I", 0))  # a message of no frames: no peer of ours sends that
    garbage.settimeout(10)
    assert garbage.recv(1) == b"", "the container closes a connection that sent what is not a message"
    stranger = StreamConn.connect(path, timeout_ms=10_000)
    call = CallMsg(id="stranger-1", token="not-the-token")
    stranger.send(framing.encode(call.to_wire(), [pickling.serialize_args((1,), {})], inline=True))
    header, _ = framing.decode(stranger.recv())
    assert (header["t"], header["id"]) == ("revoked", "stranger-1")
    assert [inc.remote(i) for i in range(20)] == list(range(1, 21))
    assert _lease(inc) is lease  # the holder's calls went on straight to its container
    stranger.close()
    garbage.close()


def test_output_and_errors_under_a_lease(app, capfd):
    @app.function()
    def chatty(n):
        for i in range(n):
            print(f"line {i}")
        print("to stderr", file=sys.stderr)
        if n < 0:
            raise ValueError(f"bad n {n}")
        return n

    _leased(chatty)
    capfd.readouterr()
    assert chatty.remote(3) == 3
    out, err = capfd.readouterr()
    assert out == "line 0\nline 1\nline 2\n" and err == "to stderr\n"  # all of it before the call returned
    with pytest.raises(ValueError, match="bad n -1") as info:
        chatty.remote(-1)
    assert "Remote traceback" in str(info.value.__notes__)
    assert chatty.remote(1) == 1 and _lease(chatty) is not None  # an error does not end the lease


def test_big_arrays_under_a_lease_leave_no_shared_memory_behind(app):
    @app.function()
    def total(a, fail=False):
        if fail:
            raise ValueError("refused")
        return a * 2

    _leased(total)
    prefix = sharedmem.ShmPool.local().prefix
    mine = lambda: {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}  # noqa: E731
    big = np.arange(1_000_000, dtype=np.float32)  # 4 MB: through shared memory
    np.testing.assert_array_equal(total.remote(big), big * 2)
    before = mine()  # this process's pool keeps the segments it got back, for reuse
    for _ in range(3):
        with pytest.raises(ValueError, match="refused"):
            total.remote(big, fail=True)
    assert mine() <= before  # the failed calls' argument segments were freed
    assert _lease(total) is not None


def test_timeout_under_a_lease_replaces_the_container(app):
    @app.function(timeout=1)
    def slow(seconds):
        time.sleep(seconds)
        return os.environ["REMOTECELL_TASK_ID"]

    lease = _leased(slow)
    first_pid = slow.remote(0)
    start = time.monotonic()
    with pytest.raises(exceptions.FunctionTimeoutError, match="timeout of 1 s"):
        slow.remote(30)
    assert time.monotonic() - start < 10
    assert _lease(slow) is not lease
    assert slow.remote(0) != first_pid  # a new container


def test_container_killed_under_a_leased_call_is_retried_on_a_new_one(app, tmp_path):
    marker = tmp_path / "started"

    @app.function()
    def sleepy(seconds):
        marker.write_text(os.environ["REMOTECELL_TASK_ID"])
        time.sleep(seconds)
        return os.environ["REMOTECELL_TASK_ID"]

    _leased(sleepy)
    leased = sleepy.remote(0)  # a direct call: the leased container's id
    marker.unlink()
    killed: list[str] = []

    def kill() -> None:
        wait_for(marker.exists, what="the leased call to start")
        killed.append(marker.read_text())
        os.kill(host_pid(sleepy.stats(), killed[0]), signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    finisher = sleepy.remote(2)  # its container dies under it; the runtime runs it again on a new one
    killer.join()
    assert killed == [leased] and finisher != leased  # the leased container ran it first, another finished it
    assert sleepy.remote(0) == finisher


def test_a_crash_that_repeats_under_a_lease_says_why(app):
    @app.function()
    def die(how):
        if how == "kill":
            print("about to die")
            os.kill(os.getpid(), signal.SIGKILL)
        return "alive"

    assert die.remote("no") == "alive" and _lease(die) is not None
    with pytest.raises(exceptions.ContainerCrashed, match="SIGKILL") as info:
        die.remote("kill")
    assert "about to die" in str(info.value) and "poison" in str(info.value)
    assert die.remote("no") == "alive"


def test_errors_under_a_lease_are_retried_by_the_runtime(app, tmp_path):
    attempts = tmp_path / "attempts"

    @app.function(retries=rc.Retries(max_retries=2, initial_delay=0.01))
    def flaky(x):
        with open(attempts, "a") as f:
            f.write("x")
        if len(attempts.read_text()) < 3:
            raise RuntimeError("not yet")
        return x * 10

    _leased(flaky)
    attempts.unlink()
    assert flaky.remote(4) == 40
    assert attempts.read_text() == "xxx"


def test_ctrl_c_under_a_lease_cancels_the_remote_call(app, tmp_path, capsys):
    marker = tmp_path / "started"

    @app.function()
    def stuck(seconds):
        marker.write_text("1")
        try:
            time.sleep(seconds)
        except BaseException:  # the runtime's interrupt
            marker.write_text("interrupted")
            raise
        return "finished"

    _leased(stuck)
    marker.unlink()
    main = threading.get_ident()

    def interrupt() -> None:
        wait_for(marker.exists, what="the leased call to start")
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        stuck.remote(60)
    assert "cancelled the remote call" in capsys.readouterr().err
    wait_for(lambda: marker.read_text() == "interrupted", what="the remote sleep to be interrupted")
    assert stuck.remote(0) == "finished"


def test_other_callers_take_the_lease_back(app):
    @app.function(max_containers=1)
    def one(x):
        return os.environ["REMOTECELL_TASK_ID"], x

    pid, _ = one.remote(0)
    assert _lease(one) is not None
    results: dict[str, object] = {}

    def other_thread() -> None:  # another thread: its own socket, so its calls queue at the runtime
        results["thread"] = [one.remote(i)[1] for i in range(20)]

    async def concurrent() -> list[int]:
        return [r[1] for r in await asyncio.gather(*(one.remote.aio(i) for i in range(20)))]

    thread = threading.Thread(target=other_thread)
    thread.start()
    mine = [one.remote(i) for i in range(20)]
    results["aio"] = asyncio.run(concurrent())
    thread.join(30)
    assert not thread.is_alive()
    assert [x for _, x in mine] == list(range(20)) and {p for p, _ in mine} == {pid}
    assert results["thread"] == list(range(20)) and results["aio"] == list(range(20))
    assert list(one.map(range(30))) == [(pid, x) for x in range(30)]


def test_an_idle_leased_container_is_scaled_down(app):
    @app.function(scaledown_window=2)
    def brief(x):
        return os.environ["REMOTECELL_TASK_ID"]

    first = brief.remote(0)
    assert _lease(brief) is not None
    wait_for(lambda: brief.stats()["containers"] == {}, timeout_s=20, what="the idle leased container to stop")
    assert brief.remote(0) != first  # the lease to the stopped container was given up, not waited on
