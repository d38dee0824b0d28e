"""System layers without a runtime: the overlay's upper folder applied to a hard-link copy, bwrap's mount points
pruned, the host's apt sources read, an OCI layer unpacked (whiteouts, links inside the image), references
parsed, and a container's root filesystem bound entry by entry with room for the runtime's own binds."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from remotecell_runtime.backends.sandbox import Bubblewrap, rootfs_binds
from remotecell_runtime.images import oci, system


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            out[rel] = ("link:" + os.readlink(path) if path.is_symlink() else "dir" if path.is_dir()
                        else path.read_text())
    return out


def test_the_upper_folder_applied_to_a_link_copy_leaves_the_lower_untouched(tmp_path):
    lower, upper, copy = tmp_path / "lower", tmp_path / "upper", tmp_path / "copy"
    for rel, text in {"etc/issue": "debian\n", "etc/motd": "hi\n", "data/a": "a", "data/b": "b", "keep": "k"}.items():
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(text)
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "issue").write_text("changed\n")  # a copy-up: a new file
    os.mknod(upper / "etc" / "motd", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout
    (upper / "data").mkdir()
    os.setxattr(upper / "data", "trusted.overlay.opaque", b"y")
    (upper / "data" / "c").write_text("c")
    (upper / "new").mkdir()
    (upper / "new" / "file").write_text("n")
    system.link_tree(lower, copy)
    system.apply_upper(upper, copy)
    assert _tree(copy) == {"etc": "dir", "etc/issue": "changed\n", "data": "dir", "data/c": "c", "keep": "k",
                           "new": "dir", "new/file": "n"}
    assert _tree(lower)["etc/issue"] == "debian\n" and "etc/motd" in _tree(lower)  # the parent as it was
    assert os.stat(copy / "keep").st_ino == os.stat(lower / "keep").st_ino  # unchanged files are links


def test_the_mount_points_bwrap_made_are_pruned_and_what_the_step_made_stays(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "root").mkdir(parents=True)
    (lower / "etc").mkdir()
    (upper / "root" / ".pyenv" / "versions" / "3.11").mkdir(parents=True)  # a bind's mount point
    (upper / "etc").mkdir()
    (upper / "etc" / "resolv.conf").write_text("")  # a file's mount point: empty, not in the image
    (upper / "vol" / "x").mkdir(parents=True)
    (upper / "opt" / "tool").mkdir(parents=True)
    (upper / "opt" / "tool" / "bin").write_text("made by the step")
    system.prune(upper, lower, ["/root/.pyenv/versions/3.11", "/etc/resolv.conf", "/vol/x", "/opt/tool"])
    assert _tree(upper) == {"root": "dir", "etc": "dir", "opt": "dir", "opt/tool": "dir",
                            "opt/tool/bin": "made by the step"}


def test_the_hosts_sources_for_its_release_only(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] https://packages.cloud.google.com/apt cloud-sdk-bookworm "
                                           "main\n# deb http://old bookworm main\ndeb http://m/debian bookworm main "
                                           "contrib\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://x\n"
        "Suites: bookworm\nComponents: main\n")
    assert system.host_sources("bookworm", str(tmp_path)) == [
        "deb http://m/debian bookworm main contrib", "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main"]


def _layer(path: Path, entries: list[tuple[str, object]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, what in entries:
            info = tarfile.TarInfo(name)
            if what == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(what, tuple):
                info.type, info.linkname = (tarfile.SYMTYPE if what[0] == "sym" else tarfile.LNKTYPE), what[1]
                tar.addfile(info)
            else:
                data = str(what).encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_oci_layers_unpack_with_whiteouts_and_links_resolved_inside_the_image(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "host-etc"
    outside.mkdir()
    _first = _layer(tmp_path / "1.tgz", [("etc/", "dir"), ("etc/gone", "x"), ("data/a", "a"), ("data/b", "b"),
                                         ("var/", "dir"), ("var/run", ("sym", "/run")),
                                         ("conf", ("sym", str(outside)))])
    oci.unpack_layer(_first, root, "layer 1")
    _second = _layer(tmp_path / "2.tgz", [("etc/.wh.gone", ""), ("data/.wh..wh..opq", ""), ("data/c", "c"),
                                          ("var/run/pid", "1"), ("conf/x", "inside"), ("data/d", ("lnk", "data/c"))])
    oci.unpack_layer(_second, root, "layer 2")
    tree = _tree(root)
    assert "etc/gone" not in tree and tree["data/c"] == "c" and "data/a" not in tree and "data/b" not in tree
    assert tree["run/pid"] == "1" and tree["var/run"] == "link:/run"  # the absolute link, followed in the image
    assert list(outside.iterdir()) == [] and (root / str(outside).lstrip("/") / "x").read_text() == "inside"
    assert os.stat(root / "data" / "d").st_ino == os.stat(root / "data" / "c").st_ino


def test_an_oci_entry_that_leaves_the_image_is_refused(tmp_path):
    bad = _layer(tmp_path / "bad.tgz", [("../escape", "x")])
    with pytest.raises(oci.PullFailed, match="leaves the image"):
        oci.unpack_layer(bad, tmp_path / "root", "layer bad")
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(("text", "want"), [
    ("python:3.11-slim", ("registry-1.docker.io", "library/python", "3.11-slim", None)),
    ("nvidia/cuda:12.4.1-runtime-ubuntu22.04", ("registry-1.docker.io", "nvidia/cuda", "12.4.1-runtime-ubuntu22.04",
                                                None)),
    ("ghcr.io/org/img", ("ghcr.io", "org/img", "latest", None)),
    ("127.0.0.1:5000/tiny:1.0", ("127.0.0.1:5000", "tiny", "1.0", None)),
    ("localhost/x@sha256:" + "a" * 64, ("localhost", "x", "latest", "sha256:" + "a" * 64)),
])
def test_references_parse_as_docker_reads_them(text, want):
    ref = oci.Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == want
    assert ref.base_url.startswith("http://" if ref.registry.startswith(("127.", "localhost")) else "https://")


def test_a_bad_reference_is_refused_naming_it():
    with pytest.raises(oci.PullFailed, match="'library/Python' is not an image name"):
        oci.Reference.parse("Python:3")


def test_a_containers_root_filesystem_is_bound_entry_by_entry_with_room_for_later_binds(tmp_path):
    rootfs = tmp_path / "rootfs"
    for folder in ("usr/bin", "etc", "home", "opt/app"):
        (rootfs / folder).mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("x")
    os.symlink("usr/bin", rootfs / "bin")
    args = rootfs_binds(str(rootfs), ["/home/u/.state/images/venv", "/tmp/x", "/root/y", "/etc/hostname", "/srv/v"])
    assert ["--symlink", "usr/bin", "/bin"] == args[:3]
    assert ["--dir", "/home"] == args[args.index("/home") - 1:args.index("/home") + 1]  # made anew: room for /home/u
    assert ["--ro-bind", str(rootfs / "etc"), "/etc"] == args[args.index("/etc") - 2:args.index("/etc") + 1]
    assert ["--ro-bind", str(rootfs / "usr"), "/usr"] == args[args.index("/usr") - 2:args.index("/usr") + 1]
    sandbox = Bubblewrap("bwrap", "bubblewrap", str(tmp_path / "sock"), [])
    argv = sandbox.argv(["python"], rootfs=str(rootfs))
    assert ("/usr", "/usr") not in zip(argv, argv[1:], strict=False) and "--ro-bind-try" not in argv


def test_without_the_sandbox_the_status_says_system_images_are_off():
    assert system.describe_host(False) == "off: they need the container sandbox"
