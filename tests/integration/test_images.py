"""Images on a real runtime: each one its own uv venv, built once layer by layer from the local package index,
cached, shared by prefix, its build log streamed to the caller, a failed build failing the run cleanly.

Packages come from this machine's index (/opt/pypi/simple): small, pure Python, and not among remotecell's own
dependencies. Each test starts its images with an ``env`` step of its own, so the layers it expects to build
are not already cached by another test of the session (they share the base layer).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import remotecell as rc
from conftest import cli, wait_for
from remotecell import _client, exceptions
from remotecell_runtime.images import runtime_code
from remotecell_runtime.protocol import pickling
from remotecell_runtime.protocol.image_spec import ImageSpec, ImageStep
from remotecell_runtime.protocol.messages.images import ImageBuildMsg, ImageBuildReply

OLD, NEW = "tabulate==0.8.10", "tabulate==0.10.0"


def fresh(name: str) -> rc.Image:
    """An image whose layers after the base are this test's own."""
    return rc.Image.debian_slim().env({"IMAGE_TEST": name})


def layers(runtime) -> set[str]:
    """The cached layers but the base every image starts from (its key: the same runtime code as here)."""
    folder = runtime.state_dir / "images" / "layers"
    base = ImageSpec().layer_keys(runtime_code.salt())[0]
    return {p.name for p in folder.iterdir()} - {base} if folder.is_dir() else set()


def staging(runtime) -> list[str]:
    folder = runtime.state_dir / "images" / "staging"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_function_runs_in_its_image_venv_with_the_runtimes_pins_and_code_only(runtime, capsys):
    app = rc.App("images-venv", image=fresh("venv").uv_pip_install(NEW))

    @app.function()
    def inside():
        import importlib.util
        import sys

        import cloudpickle
        import remotecell_runtime
        import tabulate
        import zmq

        return {"python": sys.executable, "prefix": sys.prefix, "tabulate": tabulate.__version__,
                "zmq": zmq.__version__, "cloudpickle": cloudpickle.__version__,
                "code": remotecell_runtime.__file__, "croniter": importlib.util.find_spec("croniter") is not None}

    with app.run():
        out = capsys.readouterr().out
        got = inside.remote()
    import cloudpickle
    import zmq

    assert "=> Step 2/2: uv pip install tabulate==0.10.0" in out and "+ tabulate==0.10.0" in out, out
    assert got["tabulate"] == "0.10.0"
    assert got["zmq"] == zmq.__version__ and got["cloudpickle"] == cloudpickle.__version__
    images = str(runtime.state_dir / "images")
    assert got["python"].startswith(images + "/layers/") and got["prefix"].startswith(images)
    assert got["code"].startswith(images + "/code/")  # the runtime's code through the .pth, not its site-packages
    assert got["croniter"] is False  # a dependency of the runtime, not of the image


def test_an_unchanged_image_builds_nothing_the_second_time(runtime, capsys):
    image = fresh("cached").uv_pip_install("six==1.17.0")
    app = rc.App("images-cached", image=image)

    @app.function()
    def six_version():
        import six

        return six.__version__

    with app.run():
        assert six_version.remote() == "1.17.0"
    first = capsys.readouterr().out
    assert "Built image" in first
    built = runtime.log_text().count("building image")

    started = time.monotonic()
    with app.run():  # a new app run publishes again: every layer is cached
        ready_s = time.monotonic() - started
        assert six_version.remote() == "1.17.0"
    assert ready_s < 0.5, ready_s
    assert capsys.readouterr().out == ""  # nothing built, nothing said
    assert runtime.log_text().count("building image") == built


def test_images_that_start_alike_share_those_layers(runtime, capsys):
    prefix = fresh("prefix").uv_pip_install("six==1.17.0")
    app = rc.App("images-prefix")

    @app.function(image=prefix.uv_pip_install("humanize==4.16.0"))
    def with_humanize():
        import humanize
        import six

        return humanize.intcomma(12345), six.__version__

    with app.run():
        assert with_humanize.remote() == ("12,345", "1.17.0")
    capsys.readouterr()
    before = layers(runtime)

    @app.function(image=prefix.uv_pip_install(OLD))
    def with_tabulate():
        import six
        import tabulate

        return tabulate.__version__, six.__version__

    with app.run():
        out = capsys.readouterr().out
        assert with_tabulate.remote() == ("0.8.10", "1.17.0")
    assert "(1 layers to build, 3 cached)" in out, out  # base, env and six came from the first image
    assert len(layers(runtime) - before) == 1


def test_images_sharing_a_layer_built_at_once_build_it_once(runtime):
    """Two clients ask at the same moment (a process publishes one image at a time, so two threads of one
    connection ask here, each on its own channel): the layer they share is built by one of the builds."""
    prefix = fresh("together").uv_pip_install("six==1.17.0")
    specs = [prefix.env({"WHICH": str(i)}).materialize()[0] for i in range(2)]
    conn = _client.connection()
    before = layers(runtime)
    said: list[str] = []
    errors: list[BaseException] = []
    both_asked = threading.Barrier(2)

    def build(spec: ImageSpec) -> None:
        both_asked.wait()
        try:
            reply, _ = conn.channel().roundtrip(conn.envelope(ImageBuildMsg(image=spec)),
                                                on_output=lambda stream, text: said.append(text))
            ImageBuildReply.from_wire(reply)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(spec,)) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(layers(runtime) - before) == 4  # env, six, then one env each
    assert "".join(said).count("+ six==1.17.0") == 1, said  # installed by one of the two builds only


def test_two_versions_of_one_package_run_side_by_side_in_one_app(runtime):
    app = rc.App("images-versions")

    @app.function(image=fresh("versions").uv_pip_install(OLD))
    def old():
        import tabulate

        return tabulate.__version__

    @app.function(image=fresh("versions").pip_install(NEW))
    def new():
        import tabulate

        return tabulate.__version__

    with app.run():
        calls = [old.spawn(), new.spawn(), old.spawn(), new.spawn()]
        assert [c.get(timeout=60) for c in calls] == ["0.8.10", "0.10.0", "0.8.10", "0.10.0"]
        assert old.remote() == "0.8.10" and new.remote() == "0.10.0"


def test_a_package_that_needs_another_version_of_the_runtimes_own_fails_naming_the_conflict(runtime):
    import cloudpickle

    app = rc.App("images-conflict", image=fresh("conflict").uv_pip_install("cloudpickle==2.0.0"))
    app.function()(lambda: None)
    with pytest.raises(exceptions.ImageBuildError) as info:
        with app.run():
            pass
    message = str(info.value)
    assert "image step 2/2 (uv pip install cloudpickle==2.0.0) failed" in message, message
    assert "cloudpickle==2.0.0" in message and f"cloudpickle=={cloudpickle.__version__}" in message
    assert "No solution found" in message  # uv's resolver's own lines
    assert "the runtime's own" in message


def other_python() -> str | None:
    """A version of another interpreter uv finds here with this one's minor version (by-value code needs it)."""
    import uv

    listed = subprocess.run([uv.find_uv_bin(), "python", "list", "--only-installed", "--output-format", "json"],
                            capture_output=True, text=True, timeout=60).stdout
    mine = platform.python_version()
    found = {p["version"] for p in json.loads(listed or "[]")}
    return next((v for v in sorted(found) if v != mine and v.rsplit(".", 1)[0] == mine.rsplit(".", 1)[0]), None)


def test_python_version_picks_that_interpreter(runtime):
    version = other_python()
    if version is None:
        pytest.skip("no other interpreter of this Python's minor version here")
    app = rc.App("images-other-python", image=rc.Image.debian_slim(python_version=version))

    @app.function()
    def which():
        import platform

        return platform.python_version()

    with app.run():
        assert which.remote() == version


def test_a_python_version_that_is_not_here_fails_naming_the_ones_there_are(runtime):
    app = rc.App("images-python", image=rc.Image.debian_slim(python_version="3.99"))
    app.function()(lambda: None)
    started = time.monotonic()
    with pytest.raises(exceptions.ImageBuildError, match="3.99") as info:
        with app.run():
            pass
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "image step 0/0 (base: Python 3.99) failed" in message and "Pythons found here: 3." in message, message


def test_a_failed_build_fails_the_run_with_its_step_and_output_and_caches_nothing(runtime, capsys):
    image = fresh("failed").uv_pip_install("six==1.17.0").pip_install("remotecell-no-such-package-xyz")
    app = rc.App("images-failed", image=image)

    @app.function()
    def never():
        return 1

    before = layers(runtime)
    started = time.monotonic()
    with pytest.raises(exceptions.ImageBuildError) as info:
        with app.run():
            pass
    assert time.monotonic() - started < 20
    message = str(info.value)
    assert "image step 3/3 (pip install remotecell-no-such-package-xyz) failed" in message, message
    assert "remotecell-no-such-package-xyz" in message.split("failed", 1)[1]  # uv's own lines
    assert len(layers(runtime) - before) == 2  # the env and six layers are kept; the failed one is not
    assert staging(runtime) == []
    assert "=> Step 3/3" in capsys.readouterr().out

    with pytest.raises(exceptions.ImageBuildError):  # a new run builds the failed layer again
        with app.run():
            pass
    assert capsys.readouterr().out.count("=> Step 3/3") == 1
    assert staging(runtime) == []


def test_a_failed_build_fails_the_waiting_call_in_an_implicit_app(runtime):
    app = rc.App("images-implicit")

    @app.function(image=fresh("implicit").pip_install("remotecell-no-such-package-xyz"))
    def never():
        return 1

    try:
        with pytest.raises(exceptions.ImageBuildError, match="remotecell-no-such-package-xyz"):
            never.remote()  # the first call starts the app and builds its image
        with pytest.raises(exceptions.ImageBuildError):  # again at once: the failure holds for this app run
            never.remote()
    finally:
        app.stop()


def test_a_step_the_runtime_refuses_is_refused_before_anything_is_built(runtime):
    """A spec made by hand (the client refuses these names itself): the runtime checks every step first."""
    spec = ImageSpec(steps=[ImageStep(kind="env", env={"IMAGE_TEST": "refused"}),
                            ImageStep(kind="apt", packages=["-y", "git"])])
    before = layers(runtime)
    with pytest.raises(exceptions.InvalidError, match=r"image step 2 \(apt install -y git\): \['-y'\]"):
        _client.connection().ask(ImageBuildMsg(image=spec), ImageBuildReply)
    assert layers(runtime) == before


def test_an_image_registered_without_a_build_request_is_built_for_its_first_container(app, monkeypatch):
    """What a deployed function restored at a runtime's start meets: its pool builds the image, and says so."""
    monkeypatch.setattr(rc.Image, "_build", lambda self, conn: self.materialize()[0].fields())

    @app.function(image=fresh("pool").uv_pip_install(NEW))
    def by_pool():
        import tabulate

        return tabulate.__version__

    reasons: list[str] = []
    done = threading.Event()

    def watch() -> None:  # what the pool says while the first container waits for the build
        while not done.is_set():
            reason = by_pool.stats().get("waiting_reason", "")
            if reason:
                reasons.append(reason)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert by_pool.remote() == "0.10.0"
    finally:
        done.set()
        watcher.join()
    assert any(r.startswith("building its image: step") for r in reasons), reasons


def test_the_runtime_refuses_pip_options_from_any_client(app, runtime):
    conn = _client.connection()
    app_id = app.ensure_running()[1]
    header = {"t": "fn_register", "app_id": app_id, "name": "sneaky",
              "options": {"image": {"steps": [{"kind": "pip", "packages": ["-r/etc/passwd"]}]}}}
    with pytest.raises(exceptions.InvalidError, match="no pip options"):
        conn.request(header, [pickling.serialize(lambda: 1)])
    extra = {"t": "image_build", "image": {"steps": [{"kind": "uv_pip", "packages": ["six"],
                                                      "extra_options": "--target /tmp/elsewhere"}]}}
    with pytest.raises(exceptions.InvalidError, match="'--target' is not an option an image step may give"):
        conn.request(extra)
    wait_for(lambda: "refused a message" in runtime.log_text(), what="the refusal in the runtime's log")


def test_the_build_log_reaches_the_caller_while_the_image_builds(runtime, monkeypatch):
    said: list[tuple[float, str]] = []
    monkeypatch.setattr(_client, "write_output", lambda stream, text: said.append((time.monotonic(), text)))
    app = rc.App("images-log", image=fresh("log").uv_pip_install("humanize==4.16.0").env({"X": "1"}))
    app.function()(lambda: None)
    with app.run():
        answered = time.monotonic()
    lines = [text for _, text in said]
    assert lines[0].startswith("Building image") and lines[-1].startswith("Built image"), lines
    assert sum(text.startswith("=> Step") for text in lines) == 3
    # Said as they came, not all at the end: uv's install lies between the first line and the last.
    assert said[-1][0] - said[0][0] > 0.05 and said[-1][0] <= answered
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in lines)  # a message per line


def entry_script(package: str) -> str:
    """A file for ``remotecell run`` whose app's image installs ``package``."""
    return textwrap.dedent("""
        import remotecell as rc
        app = rc.App("run-images", image=rc.Image.debian_slim().env({"IMAGE_TEST": "cli"}).pip_install(PACKAGE))

        @app.function()
        def which():
            import six
            return six.__version__

        @app.local_entrypoint()
        def main():
            print("entrypoint", which.remote())
    """).replace("PACKAGE", repr(package))


def test_remotecell_run_shows_the_build_log_and_fails_with_the_failed_step(runtime, tmp_path):
    path = tmp_path / "imaged.py"
    path.write_text(entry_script("six==1.17.0"))
    done = cli("run", str(path))
    assert done.returncode == 0, done.stderr
    assert "=> Step 2/2: pip install six==1.17.0" in done.stdout and done.stdout.endswith("entrypoint 1.17.0\n")
    path.write_text(entry_script("remotecell-no-such-package-xyz"))
    failed = cli("run", str(path))
    assert failed.returncode == 1 and "entrypoint" not in failed.stdout
    assert "image step 2/2 (pip install remotecell-no-such-package-xyz) failed" in failed.stderr, failed.stderr


TERMINAL_BUILD = """
import remotecell as rc
app = rc.App("images-terminal", image=rc.Image.debian_slim().env({"IMAGE_TEST": "terminal"}).uv_pip_install(
    "six==1.17.0"))
app.function()(lambda: None)
with app.run():
    print("ran")
"""


def test_an_image_build_on_a_terminal_shows_its_log_above_a_bar_of_its_layers(runtime, tmp_path):
    script = tmp_path / "build.py"
    script.write_text(TERMINAL_BUILD)
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=follower, stderr=follower,
                            env=dict(os.environ, COLUMNS="160", TERM="xterm-256color"))
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process is done
            break
        if not chunk:
            break
        terminal += chunk
    os.close(leader)
    assert proc.wait(120) == 0, terminal
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.decode())
    assert "=> Step 2/2: uv pip install six==1.17.0" in text and "+ six==1.17.0" in text, text  # the log
    key = re.search(r"Building image (\w+)", text)
    assert key, text
    final = text[text.rindex(f"image {key.group(1)[:12]}"):]  # the bar's last drawing
    assert "━" in final and "3/3 built" in final, text
    assert text.rstrip().endswith("ran")
