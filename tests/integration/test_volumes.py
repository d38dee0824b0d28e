"""Volumes as Modal's: persistent folders on the runtime host, mounted where functions name them, and their file API.

Each name is used as Modal's docs use it: ``Volume.from_name(..., create_if_missing=True)``,
``Volume.ephemeral()``, ``Volume.objects``, ``listdir``/``iterdir`` (``FileEntry``),
``read_file`` (chunks), ``read_file_into_fileobj``, ``batch_upload`` (``put_file``,
``put_directory``), ``remove_file``, ``copy_files``, ``commit``/``reload``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
from pathlib import Path

import pytest
import remotecell as rc
from remotecell import exceptions
from remotecell.volumes import FileEntry, FileEntryType
from remotecell_runtime.protocol.messages.volumes import CHUNK_BYTES


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def test_files_written_by_one_function_are_seen_by_another_and_by_the_client(app, tmp_path):
    vol = rc.Volume.from_name(_name("models"), create_if_missing=True)
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
    [entry] = vol.listdir("/")
    assert (entry.path, entry.type, entry.size) == ("a.bin", FileEntryType.FILE, 3) and isinstance(entry, FileEntry)
    assert b"".join(vol.read_file("a.bin")) == b"abc"


def test_a_volume_outlives_its_containers(app, runtime, tmp_path):
    name = _name("kept")
    vol = rc.Volume.from_name(name, create_if_missing=True)
    mount = str(tmp_path / name)

    @app.function(volumes={mount: vol}, scaledown_window=2)
    def write(text):
        os.makedirs(f"{mount}/notes", exist_ok=True)
        with open(f"{mount}/notes/n.txt", "w") as f:
            f.write(text)

    write.remote("kept")
    assert (runtime.state_dir / "volumes" / name / "notes" / "n.txt").read_text() == "kept"
    assert [e.path for e in rc.Volume.from_name(name).listdir("notes")] == ["notes/n.txt"]


def test_an_upload_is_read_by_a_function(app, tmp_path):
    vol = rc.Volume.from_name(_name("up"), create_if_missing=True)
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "top.txt").write_text("top")
    (local / "sub" / "deep.txt").write_text("deep")
    (tmp_path / "one.txt").write_text("one")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    with vol.batch_upload() as batch:
        batch.put_file(tmp_path / "one.txt", "/remote-path.txt")
        batch.put_file(str(tmp_path / "run.sh"), "bin/run.sh")
        batch.put_directory(local, "/remote/directory")
        batch.put_file(io.BytesIO(b"some data"), "/foobar")
    mount = str(tmp_path / "mnt")

    @app.function(volumes={mount: vol})
    def read_all():
        found = {}
        for folder, _, files in os.walk(mount):
            for f in files:
                path = os.path.join(folder, f)
                found[os.path.relpath(path, mount)] = (open(path).read(), os.stat(path).st_mode & 0o777)
        return found

    found = read_all.remote()
    assert {k: v[0] for k, v in found.items()} == {
        "remote-path.txt": "one", "bin/run.sh": "#!/bin/sh\n", "remote/directory/top.txt": "top",
        "remote/directory/sub/deep.txt": "deep", "foobar": "some data"}
    assert found["bin/run.sh"][1] == 0o755 and found["foobar"][1] == 0o644


def test_a_200_mb_file_round_trips_in_chunks_by_hash(runtime, tmp_path):
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(200):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    hwm_before = _peak_rss_mib(runtime.proc.pid)
    with rc.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(big, "/data/big.bin")
        [entry] = vol.listdir("data")
        assert entry.size == 200 << 20
        back = tmp_path / "back.bin"
        with open(back, "wb") as f:
            assert vol.read_file_into_fileobj("data/big.bin", f) == 200 << 20
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest.hexdigest()
        sizes = [len(chunk) for chunk in vol.read_file("data/big.bin")]
        assert sum(sizes) == 200 << 20 and max(sizes) == CHUNK_BYTES and len(sizes) == 25
    # The daemon relayed 400 MB without holding a file whole (chunks of 8 MiB, 4 in flight each way).
    assert _peak_rss_mib(runtime.proc.pid) - hwm_before < 120


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_listing_entries_types_and_a_large_folder_streamed(app, tmp_path):
    vol = rc.Volume.from_name(_name("ls"), create_if_missing=True)
    mount = str(tmp_path / "mnt")

    @app.function(volumes={mount: vol})
    def make():
        os.makedirs(f"{mount}/many")
        for i in range(2500):
            open(f"{mount}/many/{i:05}.txt", "w").close()
        with open(f"{mount}/file.txt", "w") as f:
            f.write("12345")
        os.symlink("/etc/passwd", f"{mount}/link")

    make.remote()
    top = {e.path: e for e in vol.listdir("/")}
    assert {p: e.type for p, e in top.items()} == {"file.txt": FileEntryType.FILE, "link": FileEntryType.SYMLINK,
                                                   "many": FileEntryType.DIRECTORY}
    assert top["file.txt"].size == 5 and top["file.txt"].mtime > 0
    assert vol.listdir("file.txt") == [top["file.txt"]]  # a file lists itself
    streamed = list(vol.iterdir("/"))  # recursive by default, as Modal's
    assert len(streamed) == 3 + 2500 and [e.path for e in streamed[2:4]] == ["many", "many/00000.txt"]
    assert len(vol.listdir("/", recursive=True)) == len(streamed)


def test_remove_and_copy(tmp_path):
    with rc.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"example"), "bar/example.txt")
        vol.copy_files(["bar/example.txt"], "bar2")
        vol.copy_files(["bar/example.txt"], "bar/example2.txt")
        vol.copy_files(["bar"], "baz", recursive=True)
        assert sorted(e.path for e in vol.iterdir("/")) == [
            "bar", "bar/example.txt", "bar/example2.txt", "bar2", "baz", "baz/example.txt", "baz/example2.txt"]
        assert b"".join(vol.read_file("bar2")) == b"example"
        with pytest.raises(exceptions.InvalidError, match="recursive=True"):
            vol.remove_file("bar")
        vol.remove_file("bar", recursive=True)
        vol.remove_file("bar2")
        with pytest.raises(FileNotFoundError, match="no 'bar2'"):
            vol.remove_file("bar2")
        assert [e.path for e in vol.listdir("/")] == ["baz"]


def test_an_ephemeral_volume_is_mounted_and_gone_after_its_block(app, tmp_path):
    mount = str(tmp_path / "eph")
    with rc.Volume.ephemeral() as vol:
        assert vol.listdir("/") == []

        @app.function(volumes={mount: vol})
        def write():
            with open(f"{mount}/out.txt", "w") as f:
                f.write("from a function")

        @app.function()
        def lookup(volume_id):
            return [e.path for e in rc.Volume.from_id(volume_id).listdir("/")]

        write.remote()
        assert b"".join(vol.read_file("out.txt")) == b"from a function"
        assert lookup.remote(vol.object_id) == ["out.txt"]  # Modal's from_id example
        oid = vol.object_id
    with pytest.raises(exceptions.NotFoundError, match="deleted, or it was ephemeral"):
        rc.Volume.from_id(oid).listdir("/")


def test_named_volumes_are_made_listed_and_deleted():
    name = _name("objects")
    rc.Volume.objects.create(name)
    with pytest.raises(exceptions.AlreadyExistsError, match="allow_existing=True"):
        rc.Volume.objects.create(name)
    rc.Volume.objects.create(name, allow_existing=True)
    listed = {v.name: v for v in rc.Volume.objects.list()}
    assert name in listed and listed[name].object_id.startswith("vo-")
    assert listed[name].info().name == name
    old = rc.Volume.from_name(name)
    assert old.listdir("/") == []
    rc.Volume.objects.delete(name)
    assert name not in {v.name for v in rc.Volume.objects.list()}
    with pytest.raises(exceptions.NotFoundError, match=f"no volume '{name}'"):
        rc.Volume.objects.delete(name)
    rc.Volume.objects.delete(name, allow_missing=True)
    rc.Volume.objects.create(name)
    with pytest.raises(exceptions.NotFoundError, match="it was deleted"):
        old.listdir("/")  # the handle meant the deleted one, not the new one of the same name
    rc.Volume.objects.delete(name)


def test_bad_input_gets_clear_errors(app, runtime, tmp_path):
    with pytest.raises(exceptions.NotFoundError, match="create_if_missing=True"):
        rc.Volume.from_name("never-created-here").listdir("/")
    vol = rc.Volume.from_name(_name("errors"), create_if_missing=True)
    with pytest.raises(exceptions.InvalidError, match="outside the volume"):
        list(vol.read_file("../../connection.json"))
    with pytest.raises(FileNotFoundError, match="no file 'missing.txt'"):
        list(vol.read_file("missing.txt"))
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"first"), "a.txt")
    with pytest.raises(FileExistsError, match="'a.txt' already exists .* force=True"):
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"new"), "b.txt")
            batch.put_file(io.BytesIO(b"second"), "a.txt")
    assert [e.path for e in vol.listdir("/")] == ["a.txt"]  # b.txt was not written either
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"second"), "a.txt")
    assert b"".join(vol.read_file("a.txt")) == b"second"
    with pytest.raises(FileNotFoundError):
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"x" * 100), "c.txt")
            batch.put_file(tmp_path / "no-such-local-file", "d.txt")
    assert [e.path for e in vol.listdir("/")] == ["a.txt"]  # a failed upload leaves nothing
    assert not any((runtime.state_dir / "volumes" / ".staging").glob("*"))
    with pytest.raises(ValueError, match="must refer to a file"):
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"x"), "dir/")


def test_a_link_a_container_makes_is_never_followed(app, runtime, tmp_path):
    vol = rc.Volume.from_name(_name("links"), create_if_missing=True)
    mount = str(tmp_path / "mnt")
    state = str(runtime.state_dir)

    @app.function(volumes={mount: vol})
    def plant():  # a link to the runtime's own folder (its keys), by its host path
        os.symlink(state, f"{mount}/state")

    plant.remote()
    with pytest.raises(exceptions.InvalidError, match="'state' is a symbolic link"):
        list(vol.read_file("state/connection.json"))
    with pytest.raises(exceptions.InvalidError, match="symbolic link"):
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"evil"), "state/connection.json")
    vol.remove_file("state", recursive=True)  # the link goes, not what it points at
    assert (runtime.state_dir / "connection.json").is_file() and vol.listdir("/") == []


def test_every_method_has_an_aio_twin():
    async def main():
        async with rc.Volume.ephemeral.aio() as vol:
            async with vol.batch_upload.aio() as batch:
                batch.put_file(io.BytesIO(b"async"), "a.txt")
            assert [e.path for e in await vol.listdir.aio("/")] == ["a.txt"]
            assert [e.path async for e in vol.iterdir.aio("/")] == ["a.txt"]
            assert b"".join([c async for c in vol.read_file.aio("a.txt")]) == b"async"
            await vol.copy_files.aio(["a.txt"], "b.txt")
            await vol.remove_file.aio("a.txt")
            sink = io.BytesIO()
            assert await vol.read_file_into_fileobj.aio("b.txt", sink) == 5 and sink.getvalue() == b"async"
            await vol.commit.aio()
            await vol.reload.aio()
            assert (await vol.info.aio()).name is None

    asyncio.run(main())


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


def test_a_missing_volume_fails_registration_and_a_taken_path_only_without_the_sandbox(app, tmp_path):
    @app.function(volumes={"/srv/none": rc.Volume.from_name("never-created-here")})
    def nowhere():
        return 1

    with pytest.raises(exceptions.NotFoundError, match="no volume 'never-created-here'"):
        nowhere.remote()

    taken = tmp_path / "taken"
    taken.mkdir()

    @app.function(volumes={str(taken): rc.Volume.from_name("escape", create_if_missing=True)})
    def clash():
        return 1

    if rc.status()["sandbox"].startswith("off:"):  # a link on the host's tree: the path must be free there
        with pytest.raises(OSError, match="that path exists on the runtime host"):
            clash.remote()
    else:  # mounted inside the sandbox only: the host's folder stays as it was
        assert clash.remote() == 1 and taken.is_dir() and not any(taken.iterdir())
