"""A volume's files are reached only beneath its folder: no ``..`` above the root, no link followed (no runtime)."""

from __future__ import annotations

import os

import pytest
from remotecell_runtime.protocol.messages.volumes import FileEntryType, VolumePathError, parts
from remotecell_runtime.volume_tree import Move, Staging, Tree


@pytest.fixture
def tree(tmp_path):
    """A volume folder beside a 'secret' the volume must never reach."""
    (tmp_path / "secret.key").write_text("runtime key")
    root = tmp_path / "vol"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("alpha")
    return Tree(root)


@pytest.mark.parametrize(("path", "expected"), [
    ("/", ()), ("", ()), ("a/b", ("a", "b")), ("/a//b/", ("a", "b")), ("./a/./b", ("a", "b")),
    ("a/../b", ("b",)), ("a/b/../../c", ("c",)),
])
def test_paths_are_read_lexically_from_the_root(path, expected):
    assert parts(path) == expected


@pytest.mark.parametrize("path", ["..", "../x", "/../secret.key", "a/../../x", "a\0b"])
def test_a_path_above_the_root_is_refused(path):
    with pytest.raises(VolumePathError):
        parts(path)


def test_a_link_is_never_followed_for_reading_or_listing(tree, tmp_path):
    os.symlink(tmp_path, tree.root / "escape")  # as a container could make one, to the runtime's folder
    os.symlink(tmp_path / "secret.key", tree.root / "key")
    with pytest.raises(VolumePathError, match="'escape' is a symbolic link"):
        tree.read(parts("escape/secret.key"), 0, 100, None)
    with pytest.raises(VolumePathError, match="'key' is a symbolic link"):
        tree.read(parts("key"), 0, 100, None)
    assert [e.type for e in tree.entries(parts("escape"), recursive=True)] == [FileEntryType.SYMLINK]
    with pytest.raises(VolumePathError, match="'escape' is a symbolic link"):
        list(tree.entries(parts("escape/secret.key"), recursive=False))
    listed = {e.path: e.type for e in tree.entries((), recursive=True)}
    assert listed == {"data": FileEntryType.DIRECTORY, "data/a.txt": FileEntryType.FILE,
                      "escape": FileEntryType.SYMLINK, "key": FileEntryType.SYMLINK}  # nothing of tmp_path


def test_writes_through_a_link_are_refused_and_removing_one_removes_only_it(tree, tmp_path):
    os.symlink(tmp_path, tree.root / "escape")
    staging = Staging(tmp_path / "staging")
    staging.write("ab12cd34", 0, 0, memoryview(b"evil"))
    with pytest.raises(VolumePathError, match="symbolic link"):
        tree.place(staging.folder("ab12cd34"), [Move("0", parts("escape/secret.key"))], force=True)
    tree.remove(parts("escape"), recursive=True)
    assert not (tree.root / "escape").exists() and (tmp_path / "secret.key").read_text() == "runtime key"


def test_without_force_an_existing_file_fails_the_whole_placement(tree, tmp_path):
    staging = Staging(tmp_path / "staging")
    for i, data in enumerate([b"new", b"beta"]):
        staging.write("ab12cd34", i, 0, memoryview(data))
    moves = [Move("1", parts("data/b.txt")), Move("0", parts("data/a.txt"))]
    with pytest.raises(FileExistsError, match="'data/a.txt' already exists"):
        tree.place(staging.folder("ab12cd34"), moves, force=False)
    assert sorted(os.listdir(tree.root / "data")) == ["a.txt"]  # b.txt was not placed either
    tree.place(staging.folder("ab12cd34"), moves, force=True)
    assert (tree.root / "data" / "a.txt").read_text() == "new" and (tree.root / "data" / "b.txt").read_text() == "beta"


def test_a_file_never_replaces_a_directory(tree, tmp_path):
    staging = Staging(tmp_path / "staging")
    staging.write("ab12cd34", 0, 0, memoryview(b"x"))
    with pytest.raises(VolumePathError, match="'data' is a directory"):
        tree.place(staging.folder("ab12cd34"), [Move("0", parts("data"))], force=True)
    with pytest.raises(VolumePathError, match="'data/a.txt' is not a directory"):
        tree.place(staging.folder("ab12cd34"), [Move("0", parts("data/a.txt/x"))], force=True)


def test_a_staged_file_of_the_wrong_size_is_refused(tmp_path):
    staging = Staging(tmp_path / "staging")
    staging.write("ab12cd34", 0, 4, memoryview(b"tail"))  # chunks may come in any order
    staging.write("ab12cd34", 0, 0, memoryview(b"head"))
    assert (staging.folder("ab12cd34") / "0").read_bytes() == b"headtail"
    assert staging.sized("ab12cd34", 0, 8) == "0"
    assert staging.sized("ab12cd34", 1, 0) == "1"  # an empty file sends no chunk
    with pytest.raises(VolumePathError, match="was to be 9 bytes but 8 arrived"):
        staging.sized("ab12cd34", 0, 9)


def test_reads_are_chunked_and_a_changed_file_is_refused(tree):
    data, size, version = tree.read(parts("data/a.txt"), 1, 3, None)
    assert (data, size) == (b"lph", 5)
    assert tree.read(parts("data/a.txt"), 4, 10, version)[0] == b"a"
    (tree.root / "data" / "a.txt").write_text("changed!")
    with pytest.raises(VolumePathError, match="changed while it was read"):
        tree.read(parts("data/a.txt"), 0, 10, version)
    with pytest.raises(FileNotFoundError, match="no file 'data/b.txt'"):
        tree.read(parts("data/b.txt"), 0, 10, None)
    with pytest.raises(VolumePathError, match="is a directory"):
        tree.read(parts("data"), 0, 10, None)


def test_a_fifo_is_refused_without_blocking(tree):
    os.mkfifo(tree.root / "pipe")
    with pytest.raises(VolumePathError, match="not a regular file"):
        tree.read(parts("pipe"), 0, 10, None)


def test_remove_needs_recursive_for_a_folder_and_never_takes_the_root(tree):
    with pytest.raises(VolumePathError, match="recursive=True"):
        tree.remove(parts("data"), recursive=False)
    with pytest.raises(VolumePathError, match="delete the volume itself"):
        tree.remove((), recursive=True)
    with pytest.raises(FileNotFoundError, match="no 'nope'"):
        tree.remove(parts("nope"), recursive=False)
    tree.remove(parts("data"), recursive=True)
    assert os.listdir(tree.root) == []


def test_copy_follows_cp(tree, tmp_path):
    os.symlink("/etc", tree.root / "data" / "link")
    tree.copy([parts("data/a.txt")], parts("b.txt"), False, tmp_path / "w1")
    assert (tree.root / "b.txt").read_text() == "alpha"
    with pytest.raises(VolumePathError, match="recursive=True"):
        tree.copy([parts("data")], parts("copy"), False, tmp_path / "w2")
    tree.copy([parts("data")], parts("copy"), True, tmp_path / "w3")
    assert (tree.root / "copy" / "a.txt").read_text() == "alpha"
    assert os.readlink(tree.root / "copy" / "link") == "/etc"  # a link copied as the link it is
    (tree.root / "into").mkdir()
    tree.copy([parts("b.txt"), parts("data")], parts("into"), True, tmp_path / "w4")
    assert sorted(os.listdir(tree.root / "into")) == ["b.txt", "data"]
    with pytest.raises(VolumePathError, match="needs 'b.txt' to be a directory"):
        tree.copy([parts("data/a.txt"), parts("copy/a.txt")], parts("b.txt"), False, tmp_path / "w5")
    tree.copy([parts("b.txt")], parts("backup"), False, tmp_path / "w7", into=True)  # "backup/": a folder
    assert (tree.root / "backup" / "b.txt").read_text() == "alpha"
    with pytest.raises(VolumePathError, match="'b.txt' is not a directory"):
        tree.copy([parts("data/a.txt")], parts("b.txt"), False, tmp_path / "w8", into=True)
    with pytest.raises(VolumePathError, match="onto or into itself"):
        tree.copy([parts("data")], parts("data/inner"), True, tmp_path / "w6")
