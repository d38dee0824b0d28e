"""``remotecell run`` and ``python -m remotecell`` as a user types them: any function, local entrypoint or
``Class.method`` of a file or a module, arguments from its signature, ``--detach``, and ``remotecell app logs``."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import remotecell as rc
from conftest import stop_process, wait_for

APP = '''
import remotecell as rc

app = rc.App("{name}")

@app.function()
def show(n: int, ratio: float = 0.5, label: str = "x", loud: bool = False, extra: int | None = None):
    print("show", repr(n), repr(ratio), repr(label), repr(loud), repr(extra))
    return f"{{label}}:{{n * ratio}}"

@app.function()
def count(upto: int):
    yield from range(upto)

@app.cls()
class Greeter:
    greeting: str = rc.parameter(default="hello")

    @rc.method()
    def greet(self, who: str):
        print(self.greeting, who)

@app.function()
def work(key: str):
    import time
    d = rc.Dict.from_name(key, create_if_missing=True)
    print("work started", flush=True)
    while not d.get("go"):
        time.sleep(0.05)
    d["done"] = "yes"
    print("work done", flush=True)

@app.local_entrypoint()
def main(key: str):
    call = work.spawn(key)
    print("spawned", call.object_id)
'''


def remotecell(*args: str, cwd: Path | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """``python -m remotecell ARGS``, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "remotecell", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=cwd)


@pytest.fixture
def app_file(runtime, tmp_path):
    name = f"entry-{secrets.token_hex(3)}"
    path = tmp_path / "demo_app.py"
    path.write_text(APP.format(name=name))
    return name, path


def test_python_dash_m_remotecell_is_the_remotecell_command(runtime):
    script = Path(sys.executable).parent / "remotecell"
    by_script = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=60)
    by_module = remotecell("version")
    assert by_module.returncode == by_script.returncode == 0 and by_module.stdout == by_script.stdout
    assert "usage: remotecell" in remotecell("--help").stdout


def test_run_calls_a_function_with_arguments_parsed_from_its_signature(app_file, tmp_path):
    _, path = app_file
    out = remotecell("run", "-w", str(tmp_path / "result.txt"), f"{path}::show", "--n", "3", "--ratio", "1.5",
                     "--label", "hi", "--loud", "--extra", "7")
    assert out.returncode == 0, out.stderr
    assert "show 3 1.5 'hi' True 7" in out.stdout
    assert (tmp_path / "result.txt").read_text() == "hi:4.5"
    out = remotecell("run", f"{path}::show", "--n", "2", "--no-loud")
    assert out.returncode == 0 and "show 2 0.5 'x' False None" in out.stdout, out.stderr
    bad = remotecell("run", f"{path}::show", "--n", "two")
    assert bad.returncode == 2 and "argument --n: invalid int value: 'two'" in bad.stderr
    missing = remotecell("run", f"{path}::show")
    assert missing.returncode == 2 and "the following arguments are required: --n" in missing.stderr


def test_run_calls_a_generator_a_class_method_and_names_what_a_file_has(app_file):
    _, path = app_file
    out = remotecell("run", f"{path}::count", "--upto", "3")
    assert out.returncode == 0 and out.stdout.split() == ["0", "1", "2"], out.stderr
    out = remotecell("run", f"{path}::Greeter.greet", "--who", "bob")
    assert out.returncode == 0 and "hello bob" in out.stdout, out.stderr
    out = remotecell("run", f"{path}::app.Greeter.greet", "--who", "ann")  # Modal's FILE::app.NAME
    assert out.returncode == 0 and "hello ann" in out.stdout, out.stderr
    out = remotecell("run", f"{path}::Greeter.greet", "--greeting", "hi", "--who", "cy")  # a class parameter too
    assert out.returncode == 0 and "hi cy" in out.stdout, out.stderr
    out = remotecell("run", f"{path}::nope")
    assert out.returncode == 1 and "no local entrypoint, function or Class.method 'nope'" in out.stderr
    assert "main, count, show, work, Greeter.greet" in out.stderr


def test_run_dash_m_imports_a_module_by_name(runtime, tmp_path):
    package = tmp_path / "pkg_entry"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(textwrap.dedent('''
        import remotecell as rc
        app = rc.App("by-module")

        @app.function()
        def double(x: int):
            print("double", x * 2)
    '''))
    out = remotecell("run", "-m", "pkg_entry.jobs::double", "--x", "21", cwd=tmp_path)
    assert out.returncode == 0 and "double 42" in out.stdout, out.stderr
    out = remotecell("run", "-m", "pkg_entry.jobs", "--x", "1", cwd=tmp_path)  # its one function
    assert out.returncode == 0 and "double 2" in out.stdout, out.stderr
    out = remotecell("run", "-m", "pkg_entry.nothing", cwd=tmp_path)
    assert out.returncode == 1 and "no module named 'pkg_entry.nothing'" in out.stderr
    digits = tmp_path / "05_folder"  # a folder name Python imports by importlib, as Modal's examples are laid out
    digits.mkdir()
    (digits / "jobs.py").write_text((package / "jobs.py").read_text())
    out = remotecell("run", "-m", "05_folder.jobs", "--x", "4", cwd=tmp_path)
    assert out.returncode == 0 and "double 8" in out.stdout, out.stderr
    out = remotecell("run", "-m", "pkg-entry.jobs", cwd=tmp_path)
    assert out.returncode == 1 and "'pkg-entry.jobs' is not a module name" in out.stderr


def _app_running(name: str) -> bool:
    return any(a["name"] == name for a in rc.status()["apps"])


def test_detach_keeps_spawned_work_after_the_client_exits_and_app_logs_shows_it(app_file):
    name, path = app_file
    key = f"detach-{secrets.token_hex(3)}"
    out = remotecell("run", "--detach", str(path), "--key", key)
    assert out.returncode == 0, out.stderr
    assert "detached" in out.stderr
    call_id = out.stdout.split("spawned ")[1].split()[0]
    wait_for(lambda: "work started" in remotecell("app", "logs", name).stdout, what="the spawned work to start")
    assert _app_running(name), "a detached app outlives its client while its work runs"
    follower = subprocess.Popen([sys.executable, "-m", "remotecell", "app", "logs", name, "--follow"],
                                stdout=subprocess.PIPE, text=True)
    try:
        rc.Dict.from_name(key)["go"] = True
        assert rc.FunctionCall.from_id(call_id).get(timeout=60) is None
        assert rc.Dict.from_name(key)["done"] == "yes"
        wait_for(lambda: not _app_running(name), what="the detached app to stop once its work is done")
        followed, _ = follower.communicate(timeout=60)  # it ends once the app has stopped
    finally:
        if follower.poll() is None:
            stop_process(follower)
    assert "[work] work started\n[work] work done\n" in followed
    assert "[work] work done" in remotecell("app", "logs", name).stdout  # a stopped app's logs stay a while
    gone = remotecell("app", "logs", f"never-{key}")
    assert gone.returncode == 1 and f"no app 'never-{key}' on this runtime" in gone.stderr


def test_without_detach_the_spawned_work_is_cancelled_when_the_client_exits(app_file):
    name, path = app_file
    key = f"nodetach-{secrets.token_hex(3)}"
    out = remotecell("run", str(path), "--key", key)
    assert out.returncode == 0, out.stderr
    call_id = out.stdout.split("spawned ")[1].split()[0]
    assert not _app_running(name)
    with pytest.raises(rc.exceptions.InputCancelled):
        rc.FunctionCall.from_id(call_id).get(timeout=60)
    assert os.environ.get("REMOTECELL_HOME")
