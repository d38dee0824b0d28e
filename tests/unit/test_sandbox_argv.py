"""The bubblewrap command line of a container: what is bound, and what never is."""

from __future__ import annotations

import sys

import pytest
from remotecell_runtime.backends import sandbox as sandbox_mod
from remotecell_runtime.backends.sandbox import (
    Bubblewrap,
    SandboxUnavailable,
    ShareRefused,
    checked_shares,
    python_roots,
)


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_the_state_folder_is_never_bound_but_its_sockets_are(tmp_path):
    state = tmp_path / "home"
    sandbox = Bubblewrap("/usr/bin/bwrap", "bubblewrap 0.8.0", str(state / "sock"), ["/opt/py", str(state / "x")])
    argv = sandbox.argv(["python", "-m", "c"], info_fd=7)
    binds = _pairs(argv, "--bind") + _pairs(argv, "--ro-bind")
    assert (str(state / "sock"), str(state / "sock")) in binds
    assert not any(src == str(state) for src, _ in binds)
    assert argv[argv.index("--info-fd") + 1] == "7" and argv[-3:] == ["python", "-m", "c"]
    assert "--unshare-pid" in argv and "--as-pid-1" not in argv and "--unshare-net" not in argv


def test_a_sandbox_agents_socket_is_bound_alone_instead_of_the_socket_folder(tmp_path):
    sock = tmp_path / "home" / "sock"
    sandbox = Bubblewrap("/usr/bin/bwrap", "bubblewrap 0.8.0", str(sock), [])
    argv = sandbox.argv(["python", "-m", "a"], socket=(str(sock / "sb-1.sock"), "/run/remotecell/agent.sock"))
    binds = _pairs(argv, "--bind") + _pairs(argv, "--ro-bind")
    assert (str(sock / "sb-1.sock"), "/run/remotecell/agent.sock") in binds
    assert not any(src.startswith(str(sock)) and src != str(sock / "sb-1.sock") for src, _ in binds)


def test_python_roots_leave_out_the_state_folder_and_what_holds_it(tmp_path):
    roots = python_roots(str(tmp_path))
    assert all(not r.startswith(str(tmp_path)) and not str(tmp_path).startswith(r + "/") for r in roots)
    assert any(sys.prefix.startswith(r) or r.startswith("/usr") for r in roots) or sys.prefix.startswith("/usr")


def test_volumes_mount_at_their_paths_and_block_network_unshares_it():
    sandbox = Bubblewrap("bwrap", "bubblewrap", "/s", [])
    argv = sandbox.argv(["true"], info_fd=3, volumes={"/data": "/host/vols/data"}, block_network=True,
                        workdir="/work")
    assert ("/host/vols/data", "/data") in _pairs(argv, "--bind")
    assert "--unshare-net" in argv and argv[argv.index("--chdir") + 1] == "/work"


def test_shares_bind_read_write_and_an_inner_folder_is_mounted_over_its_outer_one():
    sandbox = Bubblewrap("bwrap", "bubblewrap 0.8.0", "/s", ["/work/venv", "/opt/py"], shares=["/work", "/opt/py/data"])
    argv = sandbox.argv(["true"])
    binds = [(argv[i], argv[i + 1]) for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    order = [path for flag, path in binds if path in ("/work", "/work/venv", "/opt/py", "/opt/py/data")]
    assert order == ["/opt/py", "/opt/py/data", "/work", "/work/venv"]  # a Python in a share stays read-only
    assert ("--bind", "/work") in binds and ("--ro-bind", "/work/venv") in binds
    assert argv.index("/work") > argv.index("/tmp")  # over the private /tmp: a share there is seen
    assert "--info-fd" not in argv and sandbox.describe() == "bubblewrap 0.8.0, sharing /opt/py/data, /work"


def test_a_share_that_holds_or_lies_in_the_state_folder_is_refused(tmp_path):
    state = tmp_path / "state"
    (state / "volumes").mkdir(parents=True)
    for path in (tmp_path, state, state / "volumes"):
        with pytest.raises(ShareRefused, match="holds or lies in the runtime's state folder"):
            checked_shares([str(path)], str(state))
    with pytest.raises(ShareRefused, match="no such folder"):
        checked_shares([str(tmp_path / "missing")], str(state))
    (tmp_path / "data" / "inner").mkdir(parents=True)
    assert checked_shares([str(tmp_path / "data" / "inner"), str(tmp_path / "data")], str(state)) == [
        str(tmp_path / "data")]


def _fake_devices(tmp_path, monkeypatch) -> str:
    root = tmp_path / "dev"
    root.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia12", "nvidiactl", "nvidia-uvm"):
        (root / name).touch()
    (root / "nvidia-caps").mkdir()
    monkeypatch.setenv(sandbox_mod.GPU_DEVICE_ROOT_ENV, str(root))
    return str(root)


def test_a_container_gets_its_own_gpus_device_files_and_the_drivers_shared_ones(tmp_path, monkeypatch):
    root = _fake_devices(tmp_path, monkeypatch)
    argv = Bubblewrap("bwrap", "bubblewrap", "/s", []).argv(["true"], gpu_minors=[1])
    inside = {dst for src, dst in _pairs(argv, "--dev-bind") if src.startswith(root)}
    assert inside == {"/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-caps"}
    assert ("/sys", "/sys") in _pairs(argv, "--ro-bind")  # cuInit fails without it


def test_a_container_with_its_own_root_filesystem_and_gpus_gets_the_hosts_driver_libraries(tmp_path, monkeypatch):
    _fake_devices(tmp_path, monkeypatch)
    libs = tmp_path / "lib"
    libs.mkdir()
    for name in ("libcuda.so.550.54", "libnvidia-ml.so.1", "libz.so.1"):
        (libs / name).touch()
    (libs / "libcuda.so.1").symlink_to("libcuda.so.550.54")
    monkeypatch.setattr(sandbox_mod, "DRIVER_LIBRARY_DIRS", (str(libs),))
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr" / "lib").mkdir(parents=True)
    sandbox = Bubblewrap("bwrap", "bubblewrap", "/s", [])
    argv = sandbox.argv(["true"], gpu_minors=[0], rootfs=str(rootfs))
    bound = {dst: src for src, dst in _pairs(argv, "--ro-bind")}
    assert {"/usr/local/nvidia/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.550.54",
            "/usr/local/nvidia/lib64/libnvidia-ml.so.1"} <= set(bound)
    assert "/usr/local/nvidia/lib64/libz.so.1" not in bound and ("--dir", "/usr") in zip(argv, argv[1:], strict=False)
    host = _pairs(sandbox.argv(["true"], gpu_minors=[0]), "--ro-bind")
    assert not any(dst.startswith("/usr/local/nvidia") for _, dst in host)  # the host's own /usr has the driver


def test_no_gpus_no_gpu_device_and_no_sys(tmp_path, monkeypatch):
    _fake_devices(tmp_path, monkeypatch)
    argv = Bubblewrap("bwrap", "bubblewrap", "/s", []).argv(["true"], gpu_minors=[])
    assert not _pairs(argv, "--dev-bind")
    assert ("/sys", "/sys") not in _pairs(argv, "--ro-bind")


def test_gpus_of_unknown_minor_numbers_get_every_device(tmp_path, monkeypatch):
    _fake_devices(tmp_path, monkeypatch)
    argv = Bubblewrap("bwrap", "bubblewrap", "/s", []).argv(["true"], gpu_minors=None)
    assert {"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia12"} <= {dst for _, dst in _pairs(argv, "--dev-bind")}


def test_gpu_minor_numbers_follow_the_inventory(monkeypatch):
    from remotecell_runtime.gpus import Gpu, GpuAllocator

    allocator = GpuAllocator([Gpu(0, "H100", minor=3), Gpu(1, "H100", minor=0)])
    assert allocator.minors((1, 0)) == [0, 3]
    assert GpuAllocator([Gpu(0, "H100")]).minors((0,)) is None


def _fake_bwrap(tmp_path, stderr: str) -> str:
    script = tmp_path / "bwrap"
    script.write_text(f"#!/bin/sh\ncat >&2 <<'END'\n{stderr}\nEND\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_a_probe_that_fails_says_why_and_how_to_allow_user_namespaces(tmp_path):
    denied = Bubblewrap(_fake_bwrap(tmp_path, "bwrap: No permissions to create new namespace"), "bubblewrap", "/s", [])
    with pytest.raises(SandboxUnavailable, match="No permissions to create new namespace.*unprivileged_userns"):
        denied.probe()
    missing = Bubblewrap(_fake_bwrap(tmp_path, "bwrap: Can't find source path /s"), "bubblewrap", "/s", [])
    with pytest.raises(SandboxUnavailable, match=r"find source path /s\)$"):  # no namespace hint: not the cause
        missing.probe()


def test_python_roots_when_the_folder_the_runtime_started_in_is_gone(tmp_path, monkeypatch):
    """An on-demand runtime started from a temporary folder outlives it: its image builds still find their roots."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    roots = python_roots(str(tmp_path / "state"))
    assert any(sys.prefix.startswith(root) or root.startswith(sys.prefix) for root in roots), roots
