"""``rc.Sandbox``: a real runtime, real bubblewrap sandboxes running real commands through the sandbox agent."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import time

import pytest
import remotecell as rc
from conftest import Runtime, cli, run_script, wait_for
from remotecell import _bridge, exceptions
from remotecell import _client as client_mod
from remotecell.sandboxes import resize

PY = "python3"  # the host's, as the default image's containers see /usr


@pytest.fixture(scope="module")
def sb_app(sandboxed):
    application = rc.App("sandboxes")
    with application.run():
        yield application


def test_echo_is_read_from_stdout_and_the_exit_code_is_its_commands(sb_app):
    in_dir = rc.Sandbox.create("pwd", app=sb_app, workdir="/tmp/work")
    assert in_dir.stdout.read() == "/tmp/work\n"
    sb = rc.Sandbox.create("echo", "hello", "world", app=sb_app)
    assert sb.object_id.startswith("sb-")
    assert sb.stdout.read() == "hello world\n"
    assert sb.wait() is None
    assert sb.returncode == 0 and sb.poll() == 0
    failing = rc.Sandbox.create("sh", "-c", "exit 7", app=sb_app)
    assert failing.returncode is None  # not waited for yet
    failing.wait()
    assert failing.returncode == 7


def test_stdin_round_trips_through_cat(sb_app):
    sb = rc.Sandbox.create("cat", app=sb_app)
    sb.stdin.write("first line\n")
    sb.stdin.write(b"\x00\xffbytes too\n")
    sb.stdin.drain()
    sb.stdin.write("last")
    sb.stdin.write_eof()
    sb.stdin.drain()
    assert sb.stdout.read() == "first line\n\x00\ufffd" + "bytes too\nlast"  # text mode: invalid UTF-8 replaced
    with pytest.raises(exceptions.InvalidError, match="stdin is closed"):
        sb.stdin.write("more")
    sb.wait()
    assert sb.returncode == 0


def test_stderr_is_a_stream_of_its_own_and_lines_iterate_as_they_come(sb_app):
    sb = rc.Sandbox.create("sh", "-c", "echo out1; echo err1 >&2; echo out2; printf tail", app=sb_app)
    assert list(sb.stdout) == ["out1\n", "out2\n", "tail"]
    assert sb.stderr.read() == "err1\n"


def test_pty_true_runs_it_on_a_terminal_whose_output_is_all_on_stdout(sb_app):
    sb = rc.Sandbox.create("sh", "-c", "tty; echo to-stderr >&2; stty size; echo TERM=$TERM", app=sb_app, pty=True)
    out = sb.stdout.read()
    assert re.search(r"^/dev/pts/\d+\r$", out, re.M), out  # a terminal: its newlines come as \r\n
    assert "to-stderr\r\n" in out and re.search(r"^\d+ \d+\r$", out, re.M), out
    assert sb.stderr.read() == ""  # a terminal has one output stream (Modal's pty=True)
    assert sb.wait() is None and sb.returncode == 0
    host = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    typed = host.exec("cat", pty=True)
    typed.stdin.write("typed line\n")
    typed.stdin.write_eof()  # on a terminal: its EOF character, ^D, as a user types it
    typed.stdin.drain()
    assert typed.wait() == 0
    assert typed.stdout.read().count("typed line\r\n") == 2  # the terminal's echo, then cat's copy
    piped = host.exec("sh", "-c", "test -t 0 || echo not-a-terminal")
    assert piped.stdout.read() == "not-a-terminal\n"  # without pty=: pipes, as before
    with pytest.raises(exceptions.InvalidError, match=r"pty='yes' must be True or False"):
        host.exec("true", pty="yes")  # type: ignore[arg-type]
    with pytest.raises(exceptions.InvalidError, match=r"a terminal's rows=0 is out of range: 1 to 65535"):
        _bridge.run(resize(host.object_id, "main", 0, 80))
    _bridge.run(resize(host.object_id, "main", 50, 132))  # a process without a terminal: nothing to set
    assert host.poll() is None
    host.terminate()


def test_exit_codes_of_signals_and_of_a_missing_program(sb_app):
    killed = rc.Sandbox.create("sh", "-c", "kill -9 $$", app=sb_app)
    killed.wait()
    assert killed.returncode == 128 + 9  # as a shell says it
    host = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    missing = host.exec("no-such-program-here")
    assert missing.wait() == 127
    assert "cannot run 'no-such-program-here'" in missing.stderr.read()
    host.terminate()


def test_exec_runs_in_a_running_sandbox(sb_app):
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    p = sb.exec("ls", "/")
    assert {"usr", "tmp", "root"} <= set(p.stdout.read().split())
    with pytest.raises(exceptions.InvalidError, match="wait"):
        rc.ContainerProcess(sb.object_id, "p9").returncode  # noqa: B018 - the property raises until waited
    assert p.wait() == 0 and p.returncode == 0
    here = sb.exec("pwd", workdir="/tmp")
    assert here.stdout.read() == "/tmp\n"
    made = sb.exec("pwd", workdir="/tmp/new/dir")  # made if nothing is there
    assert made.stdout.read() == "/tmp/new/dir\n"
    cannot = sb.exec("pwd", workdir="/proc/nope")
    assert cannot.wait() == 126 and "working directory /proc/nope cannot be made" in cannot.stderr.read()
    shared = sb.exec("sh", "-c", "echo made > /tmp/f")
    assert shared.wait() == 0
    assert sb.exec("cat", "/tmp/f").stdout.read() == "made\n"  # one sandbox: its execs share its /tmp
    echo = sb.exec("cat")
    echo.stdin.write("to an exec\n")
    echo.stdin.write_eof()
    echo.stdin.drain()
    assert echo.stdout.read() == "to an exec\n"
    own = sb.exec("sh", "-c", 'echo "$TOKEN $MODE"', secrets=[rc.Secret.from_dict({"TOKEN": "t1"})],
                  env={"MODE": "fast"})
    assert own.stdout.read() == "t1 fast\n"
    raw = sb.exec("printf", "\\377", text=False)
    assert raw.stdout.read() == b"\xff"
    slow = sb.exec("sleep", "100", timeout=1)
    assert slow.poll() is None
    assert slow.wait() == 124  # killed at its exec timeout
    assert sb.poll() is None  # the sandbox goes on
    sb.terminate()


def test_terminate_ends_it_and_everything_in_it(sb_app):
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    inner = sb.exec("sleep", "infinity")
    sb.terminate()
    with pytest.raises(exceptions.SandboxTerminatedError):
        sb.wait()
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137  # Modal's code of a terminated sandbox
    assert inner.wait() == 137
    with pytest.raises(exceptions.InvalidError, match="has finished"):
        sb.exec("true")
    assert sb.stdout.read() == ""  # its streams ended with it


def test_a_timeout_ends_it_by_itself(sb_app):
    begin = time.monotonic()
    sb = rc.Sandbox.create("sleep", "100", app=sb_app, timeout=1)
    with pytest.raises(exceptions.SandboxTimeoutError, match="timeout of 1 s"):
        sb.wait()
    assert time.monotonic() - begin < 15
    assert sb.returncode == 124


def test_an_idle_sandbox_runs_execs_until_terminated(sb_app):
    sb = rc.Sandbox.create(app=sb_app)  # no command, as Modal's: it idles
    assert sb.exec("echo", "idle").stdout.read() == "idle\n"
    assert sb.poll() is None
    sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137


def test_from_id_works_from_a_second_client_connection(sb_app, sandboxed):
    sb = rc.Sandbox.create("sh", "-c", "echo before; cat; echo after", app=sb_app)
    script = f"""
import remotecell as rc
sb = rc.Sandbox.from_id({sb.object_id!r})
print("exec:", sb.exec("echo", "from", "another").stdout.read().strip())
sb.stdin.write("through the second client\\n")
sb.stdin.write_eof()
sb.stdin.drain()
sb.wait()
print("code:", sb.returncode)
"""
    done = run_script(script, env={"REMOTECELL_HOME": str(sandboxed.state_dir)})
    assert done.returncode == 0, done.stderr
    assert "exec: from another" in done.stdout and "code: 0" in done.stdout
    assert sb.stdout.read() == "before\nthrough the second client\nafter\n"
    assert rc.Sandbox.from_id(sb.object_id).poll() == 0


def test_list_and_status_show_the_running_ones(sb_app, sandboxed):
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    assert sb.object_id in {s.object_id for s in rc.Sandbox.list(app_id=sb_app.app_id)}
    listed = {s["id"]: s for s in rc.status()["sandboxes"]}
    assert listed[sb.object_id]["cmd"] == ["sleep", "infinity"]
    wait_for(lambda: {s["id"]: s for s in rc.status()["sandboxes"]}[sb.object_id]["status"] == "running",
             what="the sandbox to run")
    assert f"sandbox <code>{sb.object_id}</code>: running" in rc.status()._repr_html_()  # a notebook's view
    shown = cli("status", env={"REMOTECELL_HOME": str(sandboxed.state_dir)})
    assert f"sandbox {sb.object_id}: running; sleep infinity" in shown.stdout, shown.stdout + shown.stderr
    sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb.object_id not in {s.object_id for s in rc.Sandbox.list()}


def test_a_volume_is_mounted_at_its_path(sb_app, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("from the host")
    with rc.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(note, "/notes/note.txt")
        sb = rc.Sandbox.create("sh", "-c", "cat /data/notes/note.txt; echo written > /data/back.txt",
                               app=sb_app, volumes={"/data": vol})
        assert sb.stdout.read() == "from the host"
        sb.wait()
        assert b"".join(vol.read_file("back.txt")) == b"written\n"


def test_the_sandbox_sees_neither_the_runtimes_state_nor_its_variables(sb_app, sandboxed):
    (sandboxed.state_dir / "secret-marker").write_text("keys live here")
    state = str(sandboxed.state_dir)
    sb = rc.Sandbox.create("sh", "-c", f"ls {state} 2>&1; ls /run/remotecell; env", app=sb_app,
                           secrets=[rc.Secret.from_dict({"MY_TOKEN": "t0k"})])
    out = sb.stdout.read()
    assert "No such file or directory" in out  # not even the socket folder: the agent's socket sits elsewhere
    assert "secret-marker" not in out
    assert "REMOTECELL_HOME" not in out and state not in out.replace(f"ls: cannot access '{state}'", "")
    assert "MY_TOKEN=t0k" in out  # its secrets are there
    assert "\nagent.sock\n" in out  # of the runtime's sockets, only its agent's own (no other container's)


def test_block_network_cuts_the_network(sb_app):
    code = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    offline = rc.Sandbox.create(PY, "-c", code, app=sb_app, block_network=True)
    assert offline.stdout.read() == "['lo']\n"
    online = rc.Sandbox.create(PY, "-c", code, app=sb_app)
    assert online.stdout.read() != "['lo']\n"


def test_a_memory_limit_kills_it_and_says_so(sb_app):
    if "enforced" not in rc.status()["limits"]:
        pytest.skip(f"cgroup limits are not enforced here: {rc.status()['limits']}")
    sb = rc.Sandbox.create(PY, "-c", "x = bytearray(1 << 30); print('survived')", app=sb_app, memory=128)
    sb.wait()
    assert sb.returncode == 137
    assert "ran out of memory" in sb.stderr.read() and "memory=128 MiB" in rc.Sandbox.from_id(
        sb.object_id).describe().reason
    assert sb.stdout.read() == ""


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def test_large_output_arrives_whole_and_unread_output_outlives_its_process(sb_app, sandboxed):
    hwm_before = _peak_rss_mib(sandboxed.proc.pid)
    code = ("import hashlib, sys\n"
            "h = hashlib.sha256()\n"
            "for i in range(50):\n"
            "    block = bytes([i]) * (1 << 20)\n"
            "    h.update(block)\n"
            "    sys.stdout.buffer.write(block)\n"
            "sys.stdout.flush()\n"
            "sys.stderr.write(h.hexdigest())\n")
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app, timeout=120)
    p = sb.exec(PY, "-c", code, text=False)
    data = p.stdout.read()  # read as it comes
    assert len(data) == 50 << 20
    assert hashlib.sha256(data).hexdigest() == p.stderr.read().decode()
    assert p.wait() == 0
    unread = sb.exec(PY, "-c", code, text=False)
    assert unread.wait() == 0  # it wrote 50 MB that nobody read, and exited
    kept = unread.stdout.read()
    assert len(kept) == 50 << 20 and hashlib.sha256(kept).hexdigest() == unread.stderr.read().decode()
    grew = _peak_rss_mib(sandboxed.proc.pid) - hwm_before
    print(f"the daemon's peak RSS grew {grew:.1f} MiB relaying 100 MB")
    assert grew < 40  # 2 MiB of a stream in memory, the rest in its spill file: never a whole output
    sb.terminate()
    small = rc.Sandbox.create(PY, "-c", "import sys; sys.stdout.write('y' * 3_000_000)", app=sb_app)
    small.wait()  # it exited with its output unread
    assert small.stdout.read() == "y" * 3_000_000


def test_the_aio_twins(sb_app):
    async def run() -> tuple[str, list[str], int]:
        sb = await rc.Sandbox.create.aio("sleep", "infinity", app=sb_app)
        p = await sb.exec.aio("sh", "-c", "echo a; echo b")
        lines = [line async for line in p.stdout]
        code = await p.wait.aio()
        cat = await sb.exec.aio("cat")
        cat.stdin.write("async stdin")
        cat.stdin.write_eof()
        await cat.stdin.drain.aio()
        out = await cat.stdout.read.aio()
        await sb.terminate.aio()
        await sb.wait.aio(raise_on_termination=False)
        assert await sb.poll.aio() == 137
        again = await rc.Sandbox.from_id.aio(sb.object_id)
        assert again.object_id == sb.object_id
        return out, lines, code

    assert asyncio.run(run()) == ("async stdin", ["a\n", "b\n"], 0)


def test_bad_input_gets_clear_errors(sb_app):
    with pytest.raises(exceptions.InvalidError, match="empty string"):
        rc.Sandbox.create("", app=sb_app)
    with pytest.raises(exceptions.InvalidError, match=r"timeout=0 is out of range"):
        rc.Sandbox.create("true", app=sb_app, timeout=0)
    with pytest.raises(exceptions.InvalidError, match=r"timeout='soon' must be a number"):
        rc.Sandbox.create("true", app=sb_app, timeout="soon")
    with pytest.raises(exceptions.InvalidError, match=r"got 5 \(int\)"):
        rc.Sandbox.create("sleep", 5, app=sb_app)
    with pytest.raises(exceptions.InvalidError, match="needs app="):
        rc.Sandbox.create("true")
    with pytest.raises(exceptions.InvalidError, match="absolute path"):
        rc.Sandbox.create("true", app=sb_app, workdir="relative")
    with pytest.raises(exceptions.InvalidError, match="a sandbox id looks like"):
        rc.Sandbox.from_id("nope")
    with pytest.raises(exceptions.NotFoundError, match="no sandbox 'sb-missing'"):
        rc.Sandbox.from_id("sb-missing")
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    with pytest.raises(exceptions.InvalidError, match="needs a command"):
        sb.exec()
    with pytest.raises(exceptions.InvalidError, match="timeout=-1 is out of range"):
        sb.exec("true", timeout=-1)
    with pytest.raises(exceptions.InvalidError, match="bytes or str"):
        sb.stdin.write(42)  # type: ignore[arg-type]
    sb.terminate()


def test_stopping_its_app_ends_it(sandboxed):
    app = rc.App("sandbox-owner")
    with app.run():
        sb = rc.Sandbox.create("sleep", "infinity", app=app)
        assert sb.poll() is None
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137
    assert "its app stopped" in (sb.describe().reason or "")


def test_a_sandbox_gets_its_gpus_alone(tmp_path, monkeypatch, new_home):
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (devices / name).touch()
    state = new_home("sandbox-gpus")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "1", "REMOTECELL_FAKE_GPUS": "H100,H100",
                             "REMOTECELL_FAKE_GPU_DEVICES": str(devices)})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        if rc.status()["sandbox"].startswith("off:"):
            pytest.skip("no sandbox on this host")
        app = rc.App("sandbox-gpus")
        hog = app.function(gpu="H100:2", name="hog", scaledown_window=600)(lambda: "held")
        with app.run():
            assert hog.remote() == "held"  # its container stays, idle, holding both GPUs
            begin = time.monotonic()
            first = rc.Sandbox.create("echo", "got one", app=app, gpu="H100", timeout=30)
            assert first.stdout.read() == "got one\n"  # the idle container was asked to give them back
            assert time.monotonic() - begin < 60  # not its 600 s scaledown window
            wait_for(lambda: not hog.stats()["containers"], what="the idle container to be gone")
        with app.run():
            look = 'echo "$CUDA_VISIBLE_DEVICES"; ls /dev | grep nvidia'
            one = rc.Sandbox.create("sh", "-c", f"{look}; sleep infinity", app=app, gpu="H100")
            lines = iter(one.stdout)
            visible = next(lines).strip()
            assert sorted([next(lines).strip(), next(lines).strip()]) == sorted([f"nvidia{visible}", "nvidiactl"])
            other = rc.Sandbox.create("sh", "-c", f"{look}; sleep infinity", app=app, gpu="H100")
            assert next(iter(other.stdout)).strip() not in ("", visible)  # the other GPU: one each
            third = rc.Sandbox.create("true", app=app, gpu="H100")
            wait_for(lambda: "waiting for a GPU" in (third.describe().reason or ""), what="the third to wait")
            one.terminate()
            third.wait()  # it got the GPU the first gave back
            assert third.returncode == 0
    finally:
        client_mod.reset_connection()
        rt.stop()


def test_without_bubblewrap_it_runs_and_refuses_block_network(tmp_path, monkeypatch, new_home):
    state = new_home("sandbox-plain")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "0"})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        assert rc.status()["sandbox"].startswith("off:")
        assert rc.status()["sandboxes"] == []  # there, and empty, before any
        app = rc.App("sandbox-plain")
        with app.run(), rc.Volume.ephemeral() as vol:
            mount = str(tmp_path / "mnt")  # a link the agent makes, as a function's container does
            sb = rc.Sandbox.create("sh", "-c", f"echo plain > {mount}/f; cat {mount}/f", app=app,
                                   volumes={mount: vol})
            assert sb.stdout.read() == "plain\n"
            assert b"".join(vol.read_file("f")) == b"plain\n"
            with pytest.raises(exceptions.InvalidError, match="block_network=True needs the container sandbox"):
                rc.Sandbox.create("true", app=app, block_network=True)
    finally:
        client_mod.reset_connection()
        rt.stop()


def test_its_processes_cannot_speak_for_its_agent(sb_app):
    """Its processes reach the agent's socket; what they send there, under any name, is not heard."""
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app)
    forge = """
import os, zmq
from remotecell_runtime.protocol import framing
ctx = zmq.Context()
for name in (b"intruder", os.environ["REMOTECELL_TASK_ID"].encode()):  # a name of its own, and its agent's
    s = ctx.socket(zmq.DEALER)
    s.identity = name
    s.linger = 5000
    s.connect("ipc:///run/remotecell/agent.sock")
    s.send_multipart(framing.encode({"t": "sb_exit", "proc": "main", "code": 0}))
    s.send_multipart([b"not a message"])
    s.close()
ctx.term()
print("sent")
"""
    intruder = sb.exec(sys.executable, "-c", forge)  # the runtime's own Python (and pyzmq) is there, read-only
    assert intruder.stdout.read() == "sent\n", intruder.stderr.read()
    assert intruder.wait() == 0
    assert sb.exec("echo", "still").stdout.read() == "still\n"
    assert sb.poll() is None  # the forged exit of its command was not taken
    sb.terminate()


def test_a_named_sandbox_is_found_by_its_apps_name_and_its_own(sb_app):
    sb = rc.Sandbox.create("sleep", "infinity", app=sb_app, name="worker-1")
    found = rc.Sandbox.from_name("sandboxes", "worker-1")
    assert found.object_id == sb.object_id
    assert found.exec("echo", "by name").stdout.read() == "by name\n"
    with pytest.raises(exceptions.AlreadyExistsError, match="already runs a sandbox named 'worker-1'"):
        rc.Sandbox.create("true", app=sb_app, name="worker-1")
    with pytest.raises(exceptions.InvalidError, match="1 to 64 letters"):
        rc.Sandbox.create("true", app=sb_app, name="no spaces")
    sb.terminate()
    sb.wait(raise_on_termination=False)
    with pytest.raises(exceptions.NotFoundError, match="no running sandbox named 'worker-1'"):
        rc.Sandbox.from_name("sandboxes", "worker-1")
    again = rc.Sandbox.create("true", app=sb_app, name="worker-1")  # the name is free once it finished
    again.wait()
    assert again.returncode == 0


def test_it_runs_in_its_apps_image(sandboxed):
    image = rc.Image.debian_slim().env({"SB_IMAGE": "yes"}).uv_pip_install("six==1.17.0").workdir("/srv/work")
    app = rc.App("sandbox-image", image=image)
    with app.run():
        code = "import os, six, sys; print(six.__version__, os.environ['SB_IMAGE'], os.getcwd(), sys.prefix)"
        sb = rc.Sandbox.create("python", "-c", code, app=app)  # the image's python: its venv is first on PATH
        version, variable, cwd, prefix = sb.stdout.read().split()
        assert sb.wait() is None and sb.returncode == 0, sb.stderr.read()
    assert (version, variable, cwd) == ("1.17.0", "yes", "/srv/work")
    assert str(sandboxed.state_dir / "images") in prefix  # its own venv, not the runtime's


def test_a_read_whose_answer_was_lost_loses_nothing(sb_app):
    from remotecell import _bridge
    from remotecell.sandboxes import _ask, _raw
    from remotecell_runtime.protocol.messages.sandboxes import SandboxReadMsg

    sb = rc.Sandbox.create("sh", "-c", "echo one; echo two", app=sb_app)
    sb.wait()
    # A read answered but never heard (Ctrl-C between the two): its bytes were not acknowledged.
    _, payloads = _bridge.run(_ask(SandboxReadMsg(sandbox=sb.object_id, wait_s=5)))
    assert _raw(payloads) == b"one\ntwo\n"
    assert sb.stdout.read() == "one\ntwo\n"  # sent again
    assert rc.Sandbox.from_id(sb.object_id).stdout.read() == ""  # read to its end: acknowledged, dropped
