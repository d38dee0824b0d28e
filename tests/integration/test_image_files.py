"""An image's env, workdir and files steps in its containers: in a sandbox, at their paths; without one, only
Python sources (on the import path) and the variables."""

from __future__ import annotations

import os

import pytest
import remotecell as rc
from conftest import Runtime
from remotecell import _client as client_mod
from remotecell import exceptions


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    """A local module, ``helper_mod_images``, found here by name (add_local_python_source ships it)."""
    (tmp_path / "helper_mod_images.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "helper_mod_images"


def test_env_workdir_and_files_steps_in_a_sandbox(sandboxed, tmp_path, helper_module):
    (tmp_path / "copied.txt").write_text("in a layer")
    (tmp_path / "mounted.txt").write_text("first")
    image = (rc.Image.debian_slim().env({"GREETING": "hello"}).workdir("/app")
             .add_local_file(tmp_path / "copied.txt", "/app/copied.txt", copy=True)
             .env({"AFTER": "copy"})
             .add_local_file(tmp_path / "mounted.txt", "/data/mounted.txt")
             .add_local_python_source(helper_module))
    app = rc.App("images-files", image=image)

    @app.function()
    def look():
        import os

        import helper_mod_images

        with open("/root/scratch", "w") as f:  # the home stays private and writable beside the image's files
            f.write("x")
        return {"env": (os.environ.get("GREETING"), os.environ.get("AFTER")), "cwd": os.getcwd(),
                "copied": open("/app/copied.txt").read(), "mounted": open("/data/mounted.txt").read(),
                "module": helper_mod_images.VALUE, "home": sorted(os.listdir("/root")),
                "read_only": not os.access("/data/mounted.txt", os.W_OK)}

    with app.run():
        got = look.remote()
    assert got["env"] == ("hello", "copy") and got["cwd"] == "/app"
    assert got["copied"] == "in a layer" and got["mounted"] == "first" and got["module"] == 42
    assert {"helper_mod_images.py", "scratch"} <= set(got["home"]) and got["read_only"]

    built = sandboxed.log_text().count("building image")
    (tmp_path / "mounted.txt").write_text("second")  # a copy=False file: put in place anew, nothing rebuilt
    with app.run():
        assert look.remote()["mounted"] == "second"
    assert sandboxed.log_text().count("building image") == built


def test_without_the_sandbox_python_sources_are_importable_and_other_paths_refused(new_home, tmp_path,
                                                                                    helper_module):
    state = new_home("unsandboxed-images")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "0"})
    old = os.environ.get("REMOTECELL_HOME")
    os.environ["REMOTECELL_HOME"] = str(state)
    client_mod.reset_connection()
    try:
        app = rc.App("images-plain", image=rc.Image.debian_slim().env({"V": "1"}).add_local_python_source(
            helper_module))

        @app.function()
        def imported():
            import os

            import helper_mod_images

            return helper_mod_images.VALUE, os.environ["V"]

        with app.run():
            assert imported.remote() == (42, "1")

        (tmp_path / "f.txt").write_text("x")
        placing = rc.App("images-plain-placed", image=rc.Image.debian_slim().add_local_file(tmp_path / "f.txt",
                                                                                            "/data/f.txt"))
        placing.function()(lambda: 1)
        with pytest.raises(exceptions.InvalidError, match="without the sandbox .* can put nothing at a path"):
            with placing.run():
                pass
    finally:
        client_mod.reset_connection()
        rt.stop()
        if old is not None:
            os.environ["REMOTECELL_HOME"] = old
