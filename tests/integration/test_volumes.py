"""Volumes: persistent folders on the runtime host, linked into containers at the paths functions name."""

from __future__ import annotations

import os
import secrets

import pytest
import remotecell as rc
from remotecell import exceptions


def test_files_written_by_one_function_are_seen_by_another_and_by_the_client(app, tmp_path):
    vol = rc.Volume.from_name(f"models-{secrets.token_hex(3)}", create_if_missing=True)
    mount = str(tmp_path / "srv" / "models")

    @app.function(volumes={mount: vol})
    def save(name, data):
        with open(f"{mount}/{name}", "wb") as f:
            f.write(data)
        vol.commit()
        return os.environ["REMOTECELL_TASK_ID"]

    @app.function(volumes={mount: vol})
    def load(name):
        vol.reload()
        with open(f"{mount}/{name}", "rb") as f:
            return f.read(), os.environ["REMOTECELL_TASK_ID"]

    writer = save.remote("a.bin", b"abc")
    data, reader = load.remote("a.bin")
    assert data == b"abc" and reader != writer  # two containers, one folder
    assert vol.listdir("/") == [{"path": "a.bin", "type": "file", "size": 3}]
    assert vol.read_file("a.bin") == b"abc"


def test_a_volume_outlives_its_containers(app, runtime, tmp_path):
    name = f"kept-{secrets.token_hex(3)}"
    vol = rc.Volume.from_name(name, create_if_missing=True)
    mount = str(tmp_path / name)

    @app.function(volumes={mount: vol}, scaledown_window=2)
    def write(text):
        os.makedirs(f"{mount}/notes", exist_ok=True)
        with open(f"{mount}/notes/n.txt", "w") as f:
            f.write(text)

    write.remote("kept")
    assert (runtime.state_dir / "volumes" / name / "notes" / "n.txt").read_text() == "kept"
    assert rc.Volume.from_name(name).listdir("notes") == [{"path": "notes/n.txt", "type": "file", "size": 4}]


def test_volume_errors_are_clear(app, tmp_path):
    with pytest.raises(exceptions.NotFoundError, match="create_if_missing=True"):
        rc.Volume.from_name("never-created-here").listdir("/")
    with pytest.raises(exceptions.InvalidError, match="outside volume"):
        rc.Volume.from_name("escape", create_if_missing=True).read_file("../../connection.json")
    with pytest.raises(exceptions.NotFoundError, match="no file"):
        rc.Volume.from_name("escape").read_file("missing.txt")

    @app.function(volumes={"/srv/none": rc.Volume.from_name("never-created-here")})
    def nowhere():
        return 1

    with pytest.raises(exceptions.NotFoundError, match="no volume 'never-created-here'"):
        nowhere.remote()

    taken = tmp_path / "taken"
    taken.mkdir()

    @app.function(volumes={str(taken): rc.Volume.from_name("escape")})
    def clash():
        return 1

    if rc.status()["sandbox"].startswith("off:"):  # a link on the host's tree: the path must be free there
        with pytest.raises(OSError, match="that path exists on the runtime host"):
            clash.remote()
    else:  # mounted inside the sandbox only: the host's folder stays as it was
        assert clash.remote() == 1 and taken.is_dir() and not any(taken.iterdir())


def test_volume_options_are_checked_where_they_are_given():
    vol = rc.Volume.from_name("v")
    with pytest.raises(exceptions.InvalidError, match="is not an absolute path"):
        rc.App("x").function(volumes={"data": vol})(lambda: None)
    with pytest.raises(exceptions.InvalidError, match="is not an absolute path"):
        rc.App("x").function(volumes={"/": vol})(lambda: None)
    with pytest.raises(exceptions.InvalidError, match="must be a dict of absolute paths to rc.Volume"):
        rc.App("x").function(volumes={"/data": "v"})(lambda: None)
    with pytest.raises(exceptions.InvalidError, match="a volume name is 1 to 64"):
        rc.Volume.from_name("../etc")
