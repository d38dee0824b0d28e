"""Deployed apps against a real runtime: deploy, from_name from other processes, redeploy, stop, restarts, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import remotecell as rc
from conftest import Runtime, cli, run_script, wait_for
from remotecell import _entry
from remotecell.exceptions import InvalidError, NotFoundError

DEMO = '''
import os, time
import remotecell as rc

app = rc.App({name!r})

@app.function()
def square(x):
    return x * x

@app.function()
def version():
    return {version!r}

@app.function()
def count(n):
    yield from range(n)

@app.function()
def gated(gate):
    while not os.path.exists(gate):
        time.sleep(0.01)
    return {version!r}

@app.function(max_containers=1)
@rc.batched(max_batch_size=8, wait_ms=60_000)
def seen(items):
    tags = sorted({{tag for tag, _ in items}})
    return [tags for _ in items]

@app.cls()
class Model:
    @rc.enter()
    def load(self):
        self.k = 10

    @rc.method()
    def predict(self, x):
        return x * self.k

{extra}
'''


def write_demo(tmp_path: Path, name: str, version: str = "v1", extra: str = "") -> Path:
    path = tmp_path / f"demo_{name.replace('-', '_')}_{version}.py"
    path.write_text(DEMO.format(name=name, version=version, extra=extra))
    return path


def deploy(tmp_path: Path, name: str, version: str = "v1", extra: str = "",
           env: dict[str, str] | None = None) -> None:
    done = cli("deploy", str(write_demo(tmp_path, name, version, extra)), env=env)
    assert done.returncode == 0, done.stderr
    assert f"deployed app {name!r}" in done.stdout


@pytest.fixture
def deployed(runtime, tmp_path, request):
    """A demo app deployed by another process (which exited), stopped at the end of the test."""
    name = f"demo-{request.node.name[-40:]}".replace("[", "-").replace("]", "")
    deploy(tmp_path, name)
    yield name
    if any(a["name"] == name for a in rc.App.list_deployed()):
        rc.App.stop_deployed(name)


def test_a_deployed_app_is_called_by_name_from_another_process_in_every_form(deployed):
    square = rc.Function.from_name(deployed, "square")
    assert square.remote(3) == 9
    assert list(square.map(range(4))) == [0, 1, 4, 9]
    assert list(square.starmap([(2,), (5,)])) == [4, 25]
    assert square.spawn(6).get(timeout=30) == 36
    assert asyncio.run(square.remote.aio(7)) == 49
    assert list(rc.Function.from_name(deployed, "count").remote_gen(3)) == [0, 1, 2]
    model = rc.Cls.from_name(deployed, "Model")
    assert model().predict.remote(4) == 40
    apps = {a["name"]: a for a in rc.App.list_deployed()}
    assert apps[deployed]["functions"] == ["Model", "count", "gated", "seen", "square", "version"]


def test_warm_calls_by_name_take_a_lease(deployed):
    square = rc.Function.from_name(deployed, "square")
    for x in range(5):
        assert square.remote(x) == x * x
    assert wait_for(lambda: square.stats()["leased"] == 1, what="a lease on the deployed function")


def test_calls_from_two_processes_share_batches(deployed, tmp_path):
    caller = f"""
import remotecell as rc
seen = rc.Function.from_name({deployed!r}, "seen")
results = list(seen.map([(TAG, i) for i in range(4)]))
print(results[0])
"""
    procs = [subprocess.Popen([sys.executable, "-c", caller.replace("TAG", repr(tag))], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["['a', 'b']", "['a', 'b']"]  # one batch held inputs of both
    stats = rc.Function.from_name(deployed, "seen").batch_stats()
    assert stats["sizes"] == {8: 1} and stats["items"] == 8


def test_redeploy_replaces_definitions_and_running_inputs_finish(deployed, tmp_path):
    gate = tmp_path / "gate"
    version = rc.Function.from_name(deployed, "version")
    gated = rc.Function.from_name(deployed, "gated")
    assert version.remote() == "v1"
    running = gated.spawn(str(gate))
    wait_for(lambda: running.status()["state"] == "running", what="the v1 input to run")
    deploy(tmp_path, deployed, "v2")
    assert [version.remote() for _ in range(3)] == ["v2"] * 3  # a handle made before the redeploy: the new one
    _, current_fid = rc.Function.from_name(deployed, "version").fid()
    assert wait_for(lambda: _pool(current_fid)["leased"] == 1, what="the old handle to lease the new definition")
    assert [version.remote() for _ in range(3)] == ["v2"] * 3  # straight to the new definition's container
    gate.touch()
    assert running.get(timeout=30) == "v1"  # the input that ran when the new version came finished there
    deployed_apps = [a for a in rc.App.list_deployed() if a["name"] == deployed]
    assert len(deployed_apps) == 1  # unique by name


def _pool(fid):
    return next(p for p in rc.status()["pools"] if p["fid"] == fid)


def test_redeploy_drops_functions_the_new_version_lacks(deployed, tmp_path):
    assert rc.Function.from_name(deployed, "square").remote(2) == 4
    extra = "@app.function()\ndef only_in_v2():\n    return 2\n"
    deploy(tmp_path, deployed, "v2", extra=extra.replace("only_in_v2", "added"))
    assert rc.Function.from_name(deployed, "added").remote() == 2
    path = tmp_path / "smaller.py"
    path.write_text(f"import remotecell as rc\napp = rc.App({deployed!r})\n{extra}")
    assert cli("deploy", str(path)).returncode == 0
    with pytest.raises(NotFoundError, match="has no function or class 'square'.*it has: only_in_v2"):
        rc.Function.from_name(deployed, "square")


def test_app_stop_removes_it_and_calls_then_fail_clearly(deployed, tmp_path):
    square = rc.Function.from_name(deployed, "square")
    assert square.remote(2) == 4
    done = cli("app", "list")
    assert done.returncode == 0 and deployed in done.stdout
    done = cli("app", "stop", deployed)
    assert done.returncode == 0, done.stderr
    assert deployed not in cli("app", "list").stdout
    with pytest.raises(NotFoundError, match=f"square is not deployed here any more: app {deployed!r} was stopped"):
        square.remote(2)
    with pytest.raises(NotFoundError, match="not deployed here any more"):
        square.spawn(2)
    with pytest.raises(NotFoundError, match=f"no deployed app named {deployed!r}"):
        rc.Function.from_name(deployed, "square")
    again = cli("app", "stop", deployed)
    assert again.returncode == 1 and "no deployed app named" in again.stderr
    deploy(tmp_path, deployed, "v2")  # deployed anew: a handle from before the stop reaches it
    assert square.remote(5) == 25


def test_bad_names_give_clear_errors(deployed):
    with pytest.raises(NotFoundError, match=r"no deployed app named 'no-such-app'.*remotecell deploy"):
        rc.Function.from_name("no-such-app", "square")
    with pytest.raises(NotFoundError, match=r"has no function or class 'nope' \(it has: Model, count"):
        rc.Function.from_name(deployed, "nope")
    with pytest.raises(InvalidError, match="is a class: use rc.Cls.from_name"):
        rc.Function.from_name(deployed, "Model")
    with pytest.raises(InvalidError, match="is a function, not a class"):
        rc.Cls.from_name(deployed, "square")
    with pytest.raises(InvalidError, match="default instance only"):
        rc.Cls.from_name(deployed, "Model")(k=3)
    with pytest.raises(InvalidError, match="its code is not in this process"):
        rc.Function.from_name(deployed, "square").local(2)


def test_app_deploy_from_python_stays_after_the_process_exits(runtime, tmp_path):
    done = run_script(textwrap.dedent("""
        import remotecell as rc
        app = rc.App("py-deployed")

        @app.function()
        def double(x):
            return 2 * x

        app.deploy()
        print(double.remote(4))   # the deploying process calls its own deployed app
    """), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8"]
    try:
        assert rc.Function.from_name("py-deployed", "double").remote(5) == 10
    finally:
        rc.App.stop_deployed("py-deployed")


def own_runtime(tmp_path: Path, state: Path, app: str) -> tuple[Runtime, dict[str, str]]:
    """A runtime of its own in ``state`` (sessions expire after 2 s of silence) with the demo app deployed on it."""
    env = {"REMOTECELL_HOME": str(state)}
    rt = Runtime(state, env={"REMOTECELL_HEARTBEAT_TIMEOUT_S": "2"})
    try:
        deploy(tmp_path, app, env=env)
    except BaseException:
        rt.stop()
        raise
    return rt, env


def test_deployed_apps_survive_a_runtime_restart_and_their_deployers_silence(tmp_path, new_home):
    rt, env = own_runtime(tmp_path, new_home("restarting"), "kept")
    state = Path(env["REMOTECELL_HOME"])
    try:
        caller = textwrap.dedent("""
            import remotecell as rc
            from conftest import wait_for
            WAIT
            model = rc.Cls.from_name("kept", "Model")()
            print(rc.Function.from_name("kept", "square").remote(3), model.predict.remote(2))
        """)
        env_py = dict(env, PYTHONPATH=str(Path(__file__).parents[1]))
        expired = 'wait_for(lambda: rc.status()["sessions"] == 1, what="the deployer\'s session to expire")'
        done = run_script(caller.replace("WAIT", expired), env=env_py, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["9", "20"]
        gate = tmp_path / "gate"
        spawned = run_script(textwrap.dedent(f"""
            import remotecell as rc
            from conftest import wait_for
            call = rc.Function.from_name("kept", "gated").spawn({str(gate)!r})
            wait_for(lambda: call.status()["state"] == "running", what="the spawned call to run")
            print(call.object_id)
        """), env=env_py, tmp_path=tmp_path)
        assert spawned.returncode == 0, spawned.stderr
        rt.proc.send_signal(signal.SIGKILL)  # a crash: what is deployed was on disk already
        rt.proc.wait(10)
        rt.log.close()
        rt = Runtime(state)
        assert "restored deployed app kept" in rt.log_text()
        assert (state / "deployed.db").stat().st_mode & 0o777 == 0o600  # options may hold secret values
        done = run_script(caller.replace("WAIT", ""), env=env_py, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr + rt.log_text()
        assert done.stdout.split() == ["9", "20"]
        assert "kept\t" in cli("app", "list", env=env).stdout
        gate.touch()  # the spawned call that ran when the runtime died runs again on the restored definition
        resumed = run_script(f"import remotecell as rc\nprint(rc.FunctionCall.from_id({spawned.stdout.strip()!r})"
                             ".get(timeout=60))", env=env, tmp_path=tmp_path)
        assert resumed.stdout.split() == ["v1"], resumed.stderr
    finally:
        rt.stop()


def test_remotecell_run_calls_the_entrypoint_with_arguments_from_its_signature(runtime, tmp_path):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent("""
        import remotecell as rc
        app = rc.App("runner")

        @app.function()
        def square(x):
            return x * x

        @app.local_entrypoint()
        def main(n: int, label: str = "sq", loud: bool = False, scale: float = 1.0):
            print(label.upper() if loud else label, square.remote(n) * scale)
    """))
    done = cli("run", str(path), "--n", "4", "--loud")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SQ", "16.0"]
    done = cli("run", f"{path}::main", "--n", "3", "--scale", "0.5", "--label", "half")
    assert done.stdout.split() == ["half", "4.5"], done.stderr
    bad = cli("run", str(path), "--n", "four")
    assert bad.returncode == 2 and "argument --n: invalid int value: 'four'" in bad.stderr
    missing = cli("run", f"{path}::other")
    assert missing.returncode == 1 and "no local entrypoint, function or Class.method 'other' (it has: main, square)" \
        in missing.stderr


def test_entrypoint_arguments_follow_annotations_and_defaults():
    def main(n: int, ratio: float = 0.5, name: str = "x", dry_run: bool = True, untyped="u"):
        pass

    assert _entry.parse_arguments(main, ["--n", "2", "--no-dry-run", "--untyped", "v"], "p") == {
        "n": 2, "ratio": 0.5, "name": "x", "dry_run": False, "untyped": "v"}
    with pytest.raises(SystemExit):
        _entry.parse_arguments(main, [], "p")  # --n is required

    def typed(items: list):
        pass

    with pytest.raises(InvalidError, match="parameter 'items' is annotated"):
        _entry.parse_arguments(typed, [], "p")


def test_a_file_needs_one_app_and_names_its_entrypoint_when_it_has_several(tmp_path):
    two = tmp_path / "two.py"
    two.write_text(textwrap.dedent("""
        import remotecell as rc
        app = rc.App("two")

        @app.local_entrypoint()
        def a():
            pass

        @app.local_entrypoint()
        def b():
            pass
    """))
    app = _entry.find_app(_entry.load_file(str(two)), str(two))
    with pytest.raises(InvalidError, match="several local entrypoints and functions \\(a, b\\): name one as"):
        _entry.find_entrypoint(app, str(two), None)
    assert _entry.find_entrypoint(app, str(two), "b").call.__name__ == "b"
    with pytest.raises(InvalidError, match="is not a Python file"):
        _entry.load_file(str(tmp_path / "missing.py"))


def test_a_lease_held_by_a_client_that_went_silent_is_taken_back(tmp_path, new_home):
    rt, env = own_runtime(tmp_path, new_home("silent"), "leasy")
    try:
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            import os, signal, remotecell as rc
            square = rc.Function.from_name("leasy", "square")
            square.remote(1), square.remote(2)  # the second call went straight to the leased container
            print("leased", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # gone without a word, still holding the lease
        """)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, **env))
        assert holder.stdout is not None and holder.stdout.readline().strip() == "leased"
        holder.wait(30)
        leased = textwrap.dedent("""
            import remotecell as rc
            from conftest import wait_for
            pool = lambda: next(p for p in rc.status()["pools"] if p["function"] == "square")
            assert pool()["leased"] == 1, pool()
            wait_for(lambda: pool()["leased"] == 0, what="the silent client's lease to be taken back")
            print(pool()["containers"])
        """)
        done = run_script(leased, env=dict(env, PYTHONPATH=str(Path(__file__).parents[1])), tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "{'idle': 1}"  # the container stayed, free for anyone
    finally:
        rt.stop()
