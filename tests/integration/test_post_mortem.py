"""Remote post-mortem against a real runtime: pdb in the frames a container holds after an input raised."""

from __future__ import annotations

import threading
import time

import pytest
import remotecell as rc
from conftest import Runtime, run_script, wait_for
from remotecell import debugging
from remotecell_runtime.protocol.messages.debug import OPEN, DebugMsg, DebugReply


def failure_of(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_debug_opens_pdb_in_the_remote_frames(app, capsys):
    @app.function()
    def outer(y):
        def inner(x):
            total = x * 2
            return total / (x - 21)
        return inner(y + 20)

    exc = failure_of(lambda: outer.remote(1))
    assert isinstance(exc, ZeroDivisionError)
    capsys.readouterr()
    rc.debug(exc, commands=["p x, total", "pp {'k': total}", "up", "p y", "step", "q"])
    out = capsys.readouterr().out
    assert "ZeroDivisionError: division by zero" in out and "-> return total / (x - 21)" in out
    assert "(Pdb) p x, total\n(21, 42)\n" in out
    assert "{'k': 42}" in out
    assert "-> return inner(y + 20)" in out and "(Pdb) p y\n1\n" in out
    assert "*** step: not in a post-mortem" in out
    # q ends the session, not the hold: the frames open again
    rc.debug(exc, commands=["p x"])
    assert "(Pdb) p x\n21\n" in capsys.readouterr().out


def test_debug_without_an_argument_takes_the_last_remote_exception_and_a_map_failure_too(app, capsys):
    @app.function()
    def check(v):
        if v == 3:
            raise ValueError(f"bad {v}")
        return v

    results = list(check.map(range(5), return_exceptions=True))
    capsys.readouterr()
    rc.debug(results[3], commands=["p v"])
    assert "(Pdb) p v\n3\n" in capsys.readouterr().out
    failure_of(lambda: check.remote(3))
    rc.debug(commands=["p v"])  # no exception given: the last one this process got
    assert "(Pdb) p v\n3\n" in capsys.readouterr().out


def test_after_the_hold_time_debug_says_released(app, capsys):
    @app.function(secrets=[rc.Secret.from_dict({"REMOTECELL_DEBUG_HOLD_S": "1"})])
    def brief(x):
        raise RuntimeError(f"x was {x}")

    exc = failure_of(lambda: brief.remote(7))

    def released() -> bool:
        rc.debug(exc, commands=["q"])
        return "released" in capsys.readouterr().out

    wait_for(released, timeout_s=20, what="the held frames to be released after 1 s")
    rc.debug(exc, commands=["p x"])
    out = capsys.readouterr().out
    assert "remotecell: RuntimeError: x was 7: released: the frames of that RuntimeError were held 1 s" in out
    assert "(Pdb) p x" not in out  # no session opened


def test_another_call_completes_while_a_frame_is_held(app):
    @app.function(max_containers=1)
    def sometimes(x):
        if x < 0:
            raise ValueError("negative")
        return x + 1

    exc = failure_of(lambda: sometimes.remote(-5))
    frames = rc._post_mortem.of(exc)
    conn = rc._client.connection()
    opened = conn.ask(DebugMsg(target=frames.target), DebugReply)
    assert opened.state == OPEN and "ValueError: negative" in opened.text
    assert [sometimes.remote(i) for i in range(3)] == [1, 2, 3]  # the one container serves while it holds
    assert list(sometimes.map(range(3))) == [1, 2, 3]
    reply = conn.ask(DebugMsg(target=frames.target, line="p x"), DebugReply)
    assert reply.text == "-5\n" and reply.state == OPEN  # the session went on meanwhile
    assert sum(sometimes.stats()["containers"].values()) == 1

    # a slow command runs on the container's debugger thread: calls go on meanwhile
    slow: list[DebugReply] = []
    thread = threading.Thread(target=lambda: slow.append(conn.ask(
        DebugMsg(target=frames.target, line="p __import__('time').sleep(3) or x"), DebugReply)))
    thread.start()
    started = time.monotonic()
    wait_for(lambda: thread.is_alive() and sometimes.remote(10) == 11, what="a call while the debugger is busy")
    assert time.monotonic() - started < 2.5 and not slow  # it came back before the slow command did
    thread.join(10)
    assert slow and slow[0].text == "-5\n"


def test_other_containers_serve_the_function_while_one_holds_a_frame_and_runs_a_slow_command(app):
    """Holding is the one container's business: the pool routes the function's inputs to every container, the
    holding one and the others, while a pdb command keeps that container's debugger thread busy."""
    @app.function(max_containers=2)
    def where(x):
        import os
        import time
        if x < 0:
            raise ValueError("negative")
        time.sleep(1.0)  # long enough that a backlog makes the pool start its second container
        return os.environ["REMOTECELL_TASK_ID"]

    where.remote(0)  # first a slow input: the pool knows it is slow (a fast one would be queued on one container)
    exc = failure_of(lambda: where.remote(-1))
    frames = rc._post_mortem.of(exc)
    holder = frames.target.partition(":")[0]
    conn = rc._client.connection()
    assert conn.ask(DebugMsg(target=frames.target), DebugReply).state == OPEN
    slow: list[DebugReply] = []
    thread = threading.Thread(target=lambda: slow.append(conn.ask(
        DebugMsg(target=frames.target, line="p __import__('time').sleep(20) or x"), DebugReply, timeout_s=60)))
    thread.start()
    try:
        served = list(where.map(range(8)))
        assert thread.is_alive() and not slow  # all 8 came back while the debugger was still busy
        assert holder in served and len(set(served)) == 2, served  # the holder served, and so did another
    finally:
        thread.join(30)
    assert slow and slow[0].text == "-1\n"


def test_no_frames_and_a_bad_target_are_said(app, capsys):
    @app.function(secrets=[rc.Secret.from_dict({"REMOTECELL_DEBUG_HOLD_S": "0"})])
    def unheld(x):
        raise KeyError(x)

    exc = failure_of(lambda: unheld.remote("k"))
    debugging._post_mortem.LAST = None
    rc.debug(exc)
    assert "this KeyError has no remote frames to debug" in capsys.readouterr().err
    with pytest.raises(rc.exception.InvalidError, match="debug target 'nonsense' is not CONTAINER:KEY"):
        rc._client.connection().ask(DebugMsg(target="nonsense"), DebugReply)
    reply = rc._client.connection().ask(DebugMsg(target="c-999:abc"), DebugReply)
    assert reply.state == "released" and "container c-999, which raised it, has stopped" in reply.text


OVER_TCP = """
import remotecell as rc
app = rc.App("debug-tcp")

@app.function()
def fail(n):
    local_value = n * 3
    raise ValueError(f"no {n}")

with app.run():
    try:
        fail.remote(4)
    except ValueError as exc:
        rc.debug(exc, commands=["p local_value", "q"])
"""


def test_debug_over_tcp_with_curve(tmp_path, new_home):
    from test_runtime import _free_port, _token

    state = new_home("debug-tcp")
    address = f"tcp://127.0.0.1:{_free_port()}"
    token = _token(state, "debugger", address)
    rt = Runtime(state, binds=[address])
    try:
        result = run_script(OVER_TCP, env={"REMOTECELL_RUNTIME": str(token)}, tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "ValueError: no 4" in result.stdout and "(Pdb) p local_value\n12\n" in result.stdout
    finally:
        rt.stop()
