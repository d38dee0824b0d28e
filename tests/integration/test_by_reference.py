"""Functions imported by reference, as Modal's: a module-level function or class of a file given to
``remotecell run``, or of a script run as ``python app.py`` that starts its app from its main block, is found in
the container by importing its module from the source shipped with the app (module-level code runs once per
container); ``serialized=True``, an interactive ``__main__`` and an unguarded script keep shipping by value."""

from __future__ import annotations

import io
import json
import pickle
import secrets
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import remotecell as rc
from conftest import run_script
from remotecell_runtime.storage import unpack

HELPER = '''
TIMES = 0  # how often this module's code ran in this process

def bump():
    global TIMES
    TIMES += 1
    return TIMES
'''

APP = '''
import os, sys
import remotecell as rc
import counter_helper

counter_helper.bump()  # module-level code: by reference it runs in each container, once
COUNT = 0
os.environ["RC_IMPORTS"] = str(int(os.environ.get("RC_IMPORTS", "0")) + 1)

app = rc.App("{name}")

def where():
    caller = sys._getframe(1).f_globals  # the calling function's globals
    module = sys.modules.get(caller.get("__name__", ""))
    return {{"module": caller.get("__name__"), "in_sys_modules": module is not None,
            "globals_are_the_module": module is not None and caller is vars(module),
            "file": getattr(module, "__file__", None), "imports": os.environ.get("RC_IMPORTS"),
            "pid": os.getpid(),
            "python": "%d.%d" % sys.version_info[:2]}}

@app.function(max_containers=1)
def probe():
    global COUNT
    COUNT += 1
    return dict(where(), count=COUNT, helper_ran=counter_helper.TIMES)

@app.function(serialized=True)
def by_value():
    return where()

@app.cls()
class Counter:
    @rc.method()
    def where(self):
        return {{"module": type(self).__module__, "class_is_the_modules":
                 getattr(sys.modules.get(type(self).__module__), "Counter", None) is not None}}

@app.local_entrypoint()
def main():
    first = [probe.remote() for _ in range(3)]
    print("RESULT", json.dumps({{"probe": first, "by_value": by_value.remote(), "cls": Counter().where.remote()}}))

import json
'''


def remotecell(*args: str, cwd: Path | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remotecell", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=cwd)


def result_of(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture
def app_folder(runtime, tmp_path):
    (tmp_path / "counter_helper.py").write_text(HELPER)
    (tmp_path / "counter_app.py").write_text(APP.format(name=f"byref-{secrets.token_hex(3)}"))
    return tmp_path


def test_a_module_level_function_of_a_run_file_is_imported_by_reference_in_its_container(app_folder):
    result = result_of(remotecell("run", str(app_folder / "counter_app.py")))
    probes = result["probe"]
    assert {p["module"] for p in probes} == {"counter_app"}  # its own module's name, not __main__
    assert all(p["in_sys_modules"] and p["globals_are_the_module"] for p in probes), probes
    assert all("remotecell-source-" in p["file"] for p in probes), probes  # imported from the shipped source
    assert len({p["pid"] for p in probes}) == 1  # one container...
    assert [p["count"] for p in probes] == [1, 2, 3]  # ...whose module state lives across its inputs
    assert {(p["imports"], p["helper_ran"]) for p in probes} == {("1", 1)}  # module code ran once there
    assert result["cls"] == {"module": "counter_app", "class_is_the_modules": True}


def test_serialized_true_still_travels_by_value(app_folder):
    by_value = result_of(remotecell("run", str(app_folder / "counter_app.py")))["by_value"]
    assert by_value["module"] == "counter_app"  # cloudpickle keeps the name...
    assert not by_value["globals_are_the_module"]  # ...but its globals are its own copy, no module imported
    assert by_value["imports"] is None


def test_a_function_of_main_travels_by_value(runtime, tmp_path):
    out = run_script(f'''
import json, os, sys
import remotecell as rc
app = rc.App("byref-main-{secrets.token_hex(3)}")

@app.function()
def probe():
    own = sys._getframe(0).f_globals
    return {{"module": own.get("__name__"), "globals_are_main": own is vars(sys.modules["__main__"])}}

with app.run():
    print("RESULT", json.dumps(probe.remote()))
''', tmp_path=tmp_path)
    assert result_of(out) == {"module": "__main__", "globals_are_main": False}


class OnlyByReference(pickle.Unpickler):
    """Unpickles a by-reference body and nothing else: a function's code would need cloudpickle's classes."""

    def find_class(self, module: str, name: str):
        if (module, name) != ("remotecell_runtime.protocol.spec", "ByReference"):
            raise pickle.UnpicklingError(f"the body pickles {module}.{name}")
        return super().find_class(module, name)


def test_a_deployed_function_s_body_is_its_module_s_name_and_source_no_pickled_code(app_folder, runtime):
    name = f"byref-deployed-{secrets.token_hex(3)}"
    (app_folder / "counter_app.py").write_text(APP.format(name=name))
    out = remotecell("deploy", str(app_folder / "counter_app.py"))
    assert out.returncode == 0, out.stderr
    try:
        with sqlite3.connect(runtime.state_dir / "deployed.db") as db:
            bodies = dict(db.execute("SELECT name, body FROM functions WHERE app_name = ?", (name,)).fetchall())
        frames = unpack(bodies["probe"])
        ref = OnlyByReference(io.BytesIO(frames[0]), buffers=frames[1:]).load()
        assert (ref.module, ref.attribute, ref.unwrap) == ("counter_app", "probe", True)
        with tarfile.open(fileobj=io.BytesIO(ref.source)) as source:
            assert sorted(source.getnames()) == ["counter_app.py", "counter_helper.py"]  # the app's own modules
        with pytest.raises(pickle.UnpicklingError, match="the body pickles"):  # by value: cloudpickle's code
            frames = unpack(bodies["by_value"])
            OnlyByReference(io.BytesIO(frames[0]), buffers=frames[1:]).load()
        assert rc.Function.from_name(name, "probe").remote()["module"] == "counter_app"
    finally:
        assert remotecell("app", "stop", name).returncode == 0


NO_SOURCE_APP = '''
import sys
import remotecell as rc

image = {image}
app = rc.App("{name}", include_source=False)

@app.function(image=image)
def where():
    return {{"module": __name__, "file": sys.modules[__name__].__file__}}

@app.local_entrypoint()
def main():
    print("RESULT", json.dumps(where.remote()))

import json
'''


def test_include_source_false_ships_no_source_the_image_must_have_the_module(runtime, tmp_path):
    with_module = "rc.Image.debian_slim().add_local_python_source('nosource_app')"
    (tmp_path / "nosource_app.py").write_text(NO_SOURCE_APP.format(image=with_module,
                                                                   name=f"byref-nosrc-{secrets.token_hex(3)}"))
    found = result_of(remotecell("run", str(tmp_path / "nosource_app.py")))
    assert found["module"] == "nosource_app" and "remotecell-source-" not in found["file"], found
    (tmp_path / "nosource_app.py").write_text(NO_SOURCE_APP.format(image="rc.Image.debian_slim()",
                                                                   name=f"byref-nosrc-{secrets.token_hex(3)}"))
    out = remotecell("run", str(tmp_path / "nosource_app.py"))
    assert out.returncode == 1 and "No module named 'nosource_app'" in out.stderr, out.stderr


def test_by_value_code_for_another_python_minor_version_is_refused_before_anything_is_built(runtime, tmp_path):
    out = run_script(f'''
import sys
import remotecell as rc
app = rc.App("byref-other-python-{secrets.token_hex(3)}")
other = "3.%d" % (sys.version_info.minor + 1)

@app.function(image=rc.Image.debian_slim(python_version=other))
def f():
    return 1

try:
    f.remote()
except rc.exceptions.InvalidError as exc:
    print("REFUSED", exc)
''', tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "REFUSED f travels by value" in out.stdout and "define it at module level" in out.stdout, out.stdout
    assert "Building image" not in out.stdout + out.stderr


SCRIPT = '''
import os, sys
import remotecell as rc

LOADED_IN_CONTAINER = not rc.is_local()  # module-level code: where did it run?
COUNT = 0

app = rc.App("{name}")

def where():
    own = sys._getframe(1).f_globals
    module = sys.modules.get(own.get("__name__", ""))
    return {{"module": own.get("__name__"), "file": own.get("__file__"),
             "globals_are_the_module": module is not None and own is vars(module)}}

@app.function(max_containers=1)
def probe():
    global COUNT
    COUNT += 1
    return dict(where(), count=COUNT, loaded_in_container=LOADED_IN_CONTAINER)

@app.function(serialized=True)
def by_value():
    return dict(where(), loaded_in_container=LOADED_IN_CONTAINER)

@app.cls()
class Probe:
    @rc.method()
    def module(self):
        return type(self).__module__

if __name__ == "__main__":
    {start}
'''


@pytest.fixture
def deployed_script(runtime, tmp_path):
    """``python main_app.py`` whose ``if __name__ == "__main__":`` block deploys its app; the app's name."""
    name = f"byref-script-{secrets.token_hex(3)}"
    (tmp_path / "main_app.py").write_text(SCRIPT.format(name=name, start="app.deploy()"))
    out = subprocess.run([sys.executable, "main_app.py"], capture_output=True, text=True, timeout=180,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    yield name
    assert remotecell("app", "stop", name).returncode == 0


def test_a_script_run_as_python_file_that_deploys_ships_its_functions_by_reference(deployed_script):
    probe = rc.Function.from_name(deployed_script, "probe")  # from another process: this one
    first, second = probe.remote(), probe.remote()
    assert first["module"] == "main_app"  # imported by the file's name, not __main__ (its main block not run)
    assert "remotecell-source-" in first["file"] and first["file"].endswith("main_app.py")
    assert first["loaded_in_container"] is True and first["globals_are_the_module"]  # module code ran there
    assert (first["count"], second["count"]) == (1, 2)  # one module, its state kept across inputs
    assert rc.Cls.from_name(deployed_script, "Probe")().module.remote() == "main_app"
    by_value = rc.Function.from_name(deployed_script, "by_value").remote()
    assert by_value["module"] == "__main__" and by_value["loaded_in_container"] is False  # serialized=True
    assert not by_value["globals_are_the_module"]


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_an_interactive_main_still_ships_by_value(runtime, tmp_path, how):
    code = SCRIPT.format(name=f"byref-interactive-{secrets.token_hex(3)}",
                         start='with app.run():\n        import json; print("RESULT", json.dumps(probe.remote()))')
    args, stdin = ([sys.executable, "-c", code], None) if how == "-c" else ([sys.executable, "-"], code)
    out = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=tmp_path, input=stdin)
    result = result_of(out)
    assert result["module"] == "__main__" and result["loaded_in_container"] is False, result
    assert not result["globals_are_the_module"]


def test_a_script_that_starts_its_app_unguarded_keeps_by_value(runtime, tmp_path):
    unguarded = 'with app.run():\n    import json; print("RESULT", json.dumps(probe.remote()))'
    code = SCRIPT.format(name=f"byref-unguarded-{secrets.token_hex(3)}", start="pass").replace(
        'if __name__ == "__main__":\n    pass', unguarded)
    (tmp_path / "unguarded_app.py").write_text(code)
    result = result_of(subprocess.run([sys.executable, "unguarded_app.py"], capture_output=True, text=True,
                                      timeout=180, cwd=tmp_path))
    assert result["module"] == "__main__" and result["loaded_in_container"] is False, result


def test_a_guarded_script_runs_its_functions_as_remotecell_run_does(runtime, tmp_path):
    start = 'with app.run():\n        import json; print("RESULT", json.dumps(probe.remote()))'
    (tmp_path / "guarded_app.py").write_text(SCRIPT.format(name=f"byref-guarded-{secrets.token_hex(3)}",
                                                           start=start))
    result = result_of(subprocess.run([sys.executable, "guarded_app.py"], capture_output=True, text=True,
                                      timeout=180, cwd=tmp_path))
    assert result["module"] == "guarded_app" and result["loaded_in_container"] is True, result
