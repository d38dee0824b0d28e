"""%%remote and friends through a real IPython InteractiveShell against the test runtime."""

from __future__ import annotations

import base64
import os
import signal

import pytest
from conftest import host_pid, wait_for
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output
from remotecell import exceptions
from remotecell.ipython.session import RemoteSession, names_used

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def shell(runtime):
    """A real InteractiveShell with the extension loaded; its sessions stop at the end."""
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "remotecell")  # a no-op after the first test
    yield ip
    ip.run_line_magic("remote_stop", "")


def run(ip, source: str):
    """Run a cell; return (result, captured output)."""
    with capture_output() as captured:
        result = ip.run_cell(source, store_history=True)
    return result, captured


def magics(ip):
    return next(m for m in ip.magics_manager.registry.values() if type(m).__name__ == "RemoteMagics")


def test_state_persists_and_the_last_expression_is_the_cells_value(shell):
    result, out = run(shell, "%%remote\nimport os\nx = 41\nprint('in the container', os.getpid() != LOCAL_PID)")
    assert result.success is False  # LOCAL_PID is neither here nor there: a NameError, shown plainly
    assert "NameError" in out.stdout + out.stderr
    shell.user_ns["LOCAL_PID"] = os.getpid()
    result, out = run(shell, "%%remote\nimport os\nx = 41\nprint('in the container', os.getpid() != LOCAL_PID)")
    assert result.success and out.stdout == "in the container True\n"
    result, _ = run(shell, "%%remote\nx + 1")
    assert result.result == 42 and shell.user_ns["_"] == 42
    result, _ = run(shell, "%%remote\nx + 1;")  # a trailing semicolon hides the value, as in IPython
    assert result.result is None
    result, _ = run(shell, "%%remote\n_ * 2")  # the session keeps its own `_`
    assert result.result == 84


def test_push_and_pull(shell):
    shell.user_ns.update(data=[1, 2, 3], scale=10)
    result, out = run(shell, "%%remote --session pp\ntotal = sum(data) * scale\ntotal")
    assert result.result == 60 and "pushed" not in out.stderr  # small pushes say nothing
    shell.user_ns["scale"] = 100  # the session has scale already: not pushed again ...
    assert run(shell, "%%remote --session pp\nscale")[0].result == 10
    assert run(shell, "%%remote --session pp --push scale\nscale")[0].result == 100  # ... unless asked
    result, out = run(shell, "%%remote --session pp --pull total,doubled,nothing\ndoubled = total * 2")
    assert shell.user_ns["total"] == 60 and shell.user_ns["doubled"] == 120
    assert "--pull: session 'pp' has no variable nothing" in out.stderr


def test_a_big_push_says_so_in_one_line(shell):
    import numpy as np

    shell.user_ns["big"] = np.ones(3_000_000)  # 24 MB
    result, out = run(shell, "%%remote --session big\nfloat(big.sum())")
    assert result.result == 3_000_000.0
    assert [line for line in out.stderr.splitlines() if "pushed" in line] == [
        "remotecell: pushed big (24.0 MB) to session 'big'"]


def test_unpicklable_names_are_left_out_and_named(shell):
    import threading

    shell.user_ns["lock"] = threading.Lock()
    result, out = run(shell, "%%remote --session up\nlock")
    assert "not pushed (cannot be pickled): lock (lock" in out.stderr
    assert not result.success and "NameError" in out.stdout + out.stderr


def test_display_and_matplotlib_figures_reach_the_cell(shell):
    shell.user_ns["PNG"] = PNG_1PX
    source = (
        "%%remote --session disp\n"
        "class Dot:\n"
        "    def _repr_png_(self): return PNG\n"
        "display(Dot())\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "plt.show()\n"
        "plt.figure(); plt.plot([3, 2])\n"  # drawn, not shown: shown at the end of the cell
    )
    result, out = run(shell, source)
    assert result.success, out.stdout + out.stderr
    images = [o.data for o in out.outputs]
    assert len(images) == 3
    assert base64.b64decode(images[0]["image/png"]) == PNG_1PX
    for figure in images[1:]:
        assert base64.b64decode(figure["image/png"]).startswith(b"\x89PNG")
        assert figure["text/plain"].startswith("<Figure size")


def test_remote_error_shows_the_cells_own_traceback(shell):
    result, out = run(shell, "%%remote --session err\ndef f(n):\n    return 1 / n\nf(0)")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    text = out.stdout + out.stderr
    assert "Remote traceback" in text and "return 1 / n" in text and "ZeroDivisionError: division by zero" in text
    assert "worker.py" not in text and "session.py" not in text  # only the cell's frames


def test_syntax_error_is_reported_without_a_round_trip(shell):
    result, out = run(shell, "%%remote --session syntax\nfor (\n")
    assert isinstance(result.error_in_exec, SyntaxError)
    assert "SyntaxError" in out.stdout + out.stderr and "session.py" not in out.stdout + out.stderr
    assert not magics(shell).sessions.by_name["syntax"].started  # nothing was sent: no session yet
    import remotecell as rc

    assert not [a for a in rc.status()["apps"] if "session-syntax" in str(a)]


def test_timeout_interrupts_the_cell_and_keeps_the_state(shell):
    run(shell, "%%remote --session slow\nkept = 'yes'")
    result, out = run(shell, "%%remote --session slow --timeout 1\nimport time\nwhile True: time.sleep(0.05)")
    assert isinstance(result.error_in_exec, exceptions.FunctionTimeoutError)
    assert "ran past its timeout of 1 s" in out.stdout + out.stderr
    assert run(shell, "%%remote --session slow\nkept")[0].result == "yes"
    result, out = run(shell, "%%remote --session slow --timeout 0\n1")
    assert "--timeout=0.0 is out of range: allowed 1 to 86400" in out.stdout + out.stderr


def test_a_session_that_dies_under_a_cell_is_reported_and_replaced(shell):
    run(shell, "%%remote --session crash\nstate = 1")
    result, out = run(shell, "%%remote --session crash\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    text = out.stdout + out.stderr
    assert "session 'crash' died while running this cell" in text and "SIGKILL" in text
    assert "the next %%remote cell starts a fresh session" in text
    result, out = run(shell, "%%remote --session crash\n'state' in globals()")
    assert "starting a fresh session 'crash': the previous one died, its state is gone" in out.stderr
    assert result.result is False


def test_a_session_killed_between_cells_says_its_state_is_gone(shell):
    run(shell, "%%remote --session idle\nimport os\ntask = os.environ['REMOTECELL_TASK_ID']\nstate = 1")
    task = run(shell, "%%remote --session idle\ntask")[0].result
    session = magics(shell).sessions.by_name["idle"]
    pid = host_pid(_pool(session), task)  # not os.getpid() there: a sandboxed container has its own pids
    os.kill(pid, signal.SIGKILL)
    shell.user_ns["task"] = task
    wait_for(lambda: not _exists(pid), what="the runtime to reap the killed container")
    # the runtime keeps one container warm: wait until the replacement is there
    wait_for(lambda: _pool(session).get("containers", {}).get("idle") == 1, what="the replacement container")
    result, out = run(shell, "%%remote --session idle\nimport os\n'state' in globals(), "
                             "os.environ['REMOTECELL_TASK_ID'] != task")
    assert "session 'idle' was restarted since the last cell" in out.stderr and "its state is gone" in out.stderr
    assert result.result == (False, True)  # `task` was pushed from here: the cell ran in the new container


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pool(session: RemoteSession) -> dict:
    """The session's pool in the runtime's status ({} when it has none)."""
    import remotecell as rc

    _, fid = session.registration.fid()
    return next((p for p in rc.status()["pools"] if p["fid"] == fid), {})


def test_remote_session_shows_and_stop_ends(shell):
    run(shell, "%%remote --session show\nv = 1")
    with capture_output() as out:
        shell.run_line_magic("remote_session", "--session show --names")
    assert "session 'show': no GPU, no cell timeout; running (container c" in out.stdout
    assert "variables: v" in out.stdout
    with capture_output() as out:
        shell.run_line_magic("remote_session", "--session show --timeout 30")
    assert "cells stop after 30 s" in out.stdout
    with capture_output() as out:
        shell.run_line_magic("remote_stop", "--session show")
    assert "stopped session(s): 'show'" in out.stdout
    result, out = run(shell, "%%remote --session show\n'v' in globals()")
    assert result.result is False


def test_bad_options_are_named(shell):
    result, out = run(shell, "%%remote --gpu 'no such!'\n1")
    assert "is not a GPU spec" in out.stdout + out.stderr
    result, out = run(shell, "%%remote --session bad/name\n1")
    assert "session name 'bad/name' must be 1 to 40 letters" in out.stdout + out.stderr
    result, out = run(shell, "%%remote --push 1x\n1")
    assert "--push: '1x' is not a variable name" in out.stdout + out.stderr
    result, out = run(shell, "%%remote --push absent\n1")
    assert "--push: no variable absent here to push" in out.stdout + out.stderr


def test_names_a_cell_reads_before_binding_them():
    assert names_used("y = x + 1\nprint(y)") == ["print", "x"]
    assert names_used("x = x + 1") == ["x"]  # reads x before binding it
    assert names_used("model = build()\nmodel.fit()") == ["build"]  # binds model before it reads it
    assert names_used("def f(a):\n    return a + z\nf(q)") == ["q", "z"]  # parameters stay out
    assert names_used("import numpy as np\nnp.zeros(3)") == []
    assert names_used("total += 1") == ["total"]
    assert names_used("await asyncio.sleep(0)") == ["asyncio"]  # top-level await is allowed


def test_changing_the_gpu_restarts_the_session_saying_so(shell, tmp_path, monkeypatch, new_home):
    import remotecell._client as client_mod
    from conftest import Runtime

    state = new_home("gpu-home")
    rt = Runtime(state, env={"REMOTECELL_FAKE_GPUS": "H100,H100"})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        devices = "import os\nx = 1\nos.environ['CUDA_VISIBLE_DEVICES']"
        result, out = run(shell, f"%%remote --session g --gpu any\n{devices}")
        assert result.result in ("0", "1"), out.stdout + out.stderr
        assert run(shell, "%%remote --session g --gpu any\nx")[0].result == 1  # same spec: same session
        with capture_output() as out:
            shell.run_line_magic("remote_session", "--session g --gpu any:2")
        assert "restarting session 'g' with gpu='any:2' (was 'any'): its state is gone" in out.stderr
        assert "session 'g': gpu='any:2'" in out.stdout
        result, out = run(shell, "%%remote --session g\nimport os\n"
                                 "'x' in globals(), os.environ['CUDA_VISIBLE_DEVICES']")
        assert result.result == (False, "0,1")
        result, out = run(shell, "%%remote --session g2 --gpu A100\n1")
        assert "gpu='A100' cannot be met: this host has 0: H100, 1: H100" in out.stdout + out.stderr
    finally:
        shell.run_line_magic("remote_stop", "")
        client_mod.reset_connection()
        rt.stop()
