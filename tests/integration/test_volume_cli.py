"""``remotecell volume ...`` as a real command in its own process, with Modal's argument shapes."""

from __future__ import annotations

import io
import json
import secrets

import remotecell as rc
from conftest import cli


def _ok(*args: str) -> str:
    done = cli("volume", *args)
    assert done.returncode == 0, f"remotecell volume {' '.join(args)}: {done.stderr}"
    return done.stdout


def _fails(*args: str) -> str:
    done = cli("volume", *args)
    assert done.returncode == 1, f"remotecell volume {' '.join(args)} should fail: {done.stdout}"
    return done.stderr


def test_create_list_put_ls_get_rm_cp_delete(runtime, tmp_path):
    name = f"cli-{secrets.token_hex(3)}"
    assert "created volume" in _ok("create", name)
    assert name in [v["name"] for v in json.loads(_ok("list", "--json"))]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    _ok("put", name, str(src))  # REMOTE defaults to /: the folder keeps its name
    _ok("put", name, str(src / "a.txt"), "/top/")  # ending in /: into that folder, under its own name
    assert _ok("ls", name).split() == ["src", "top"]  # not a terminal: one path a line
    assert _ok("ls", name, "src").split() == ["src/a.txt", "src/sub"]
    listed = {e["path"]: e["type"] for e in json.loads(_ok("ls", name, "/", "--json"))}
    assert listed == {"src": "dir", "top": "dir"}

    assert "already exists" in _fails("put", name, str(src / "a.txt"), "top/a.txt") and \
        "--force" in _fails("put", name, str(src / "a.txt"), "top/a.txt")
    (tmp_path / "new.txt").write_text("newer")
    _ok("put", name, str(tmp_path / "new.txt"), "top/a.txt", "--force")

    out = tmp_path / "out"
    out.mkdir()
    _ok("get", name, "top/a.txt", str(out))
    assert (out / "a.txt").read_text() == "newer"
    assert "--force" in _fails("get", name, "top/a.txt", str(out))
    _ok("get", name, "src", str(out))  # a folder, into a folder: with its name, as cp -r
    assert (out / "src" / "sub" / "b.txt").read_text() == "beta"
    _ok("get", name, "src", str(tmp_path / "fresh"))  # to a new path: its contents there
    assert (tmp_path / "fresh" / "a.txt").read_text() == "alpha"
    assert _ok("get", name, "src/sub/b.txt", "-") == "beta"

    _ok("cp", name, "src/a.txt", "src/sub/b.txt", "top")
    assert _ok("ls", name, "top").split() == ["top/a.txt", "top/b.txt"]
    assert "recursive=True (remotecell volume rm -r)" in _fails("rm", name, "src")
    _ok("rm", name, "src", "-r")
    assert "no 'src'" in _fails("rm", name, "src")

    assert "pass --yes" in _fails("delete", name)
    _ok("delete", name, "--yes")
    assert f"remotecell volume create {name}" in _fails("ls", name)
    _ok("delete", name, "--yes", "--allow-missing")


def test_the_cli_and_the_api_see_the_same_volume(runtime, tmp_path):
    name = f"cli-api-{secrets.token_hex(3)}"
    vol = rc.Volume.from_name(name, create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"\0" * 1000), "/w.bin")
    assert _ok("ls", name).split() == ["w.bin"]
    assert "no 'nope.txt' in the volume" in _fails("get", name, "nope.txt", str(tmp_path / "nope.txt"))
    assert "no " in _fails("put", name, str(tmp_path / "missing"), "/m")  # a local file that is not there
    rc.Volume.objects.delete(name)
    assert "no volume" in _fails("ls", name)
