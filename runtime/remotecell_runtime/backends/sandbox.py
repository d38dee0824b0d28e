"""The container sandbox: bubblewrap around a container's process, so user code sees only what it may.

Inside, read-only: the host's system (``/usr`` and its ``/bin``, ``/lib`` links,
``/etc``), or for an image with system steps its own root filesystem as ``/`` (with
the host's ``/etc/resolv.conf`` and ``/etc/hosts``), and the Python the container
runs (its prefixes and import paths).
An image's container also reads its venv and base interpreter (read-only) and
finds its image's files at their paths (read-only, each entry of a step's folder
bound at its place).
Inside, writable: a private ``/tmp`` and home (``/root``), the runtime's socket
folder (connect back, direct calls, and the container's own client of this
runtime), ``/dev/shm`` (zero-copy frames are shared-memory files), the volumes at
their mount paths, and the operator's shared folders (``remotecell serve --share``)
at their own paths.  Device files: a fresh ``/dev`` with the host's GPU devices
given to the container alone (``/dev/nvidia<minor>`` of its GPUs, with the driver's
shared ``nvidiactl``/``nvidia-uvm``/... files and ``/sys`` read-only, which the CUDA
driver needs); a container without GPUs gets no GPU device at all.
Not inside: the rest of the runtime's state folder (keys, tokens, databases; of
it a container sees only its image's folders, read-only),
the user's home, other containers' files, other processes (own pid namespace).

On by default wherever bubblewrap works (``find`` runs one empty sandbox to
know); ``REMOTECELL_SANDBOX=0`` turns it off.

Invariants: each container has its own pid namespace, whose pid 1 is bwrap's
init (it reaps, and user code may signal itself as on a host); bwrap forwards
no signals, so the backend signals the container itself, the init's one child
(``container_pid``), never bwrap; bwrap dies with the daemon
(``--die-with-parent``) and the container with bwrap (``PR_SET_PDEATHSIG`` in
the container); no capabilities (``--cap-drop ALL``); no shared folder is,
holds or lies in the state folder (``checked_shares`` refuses it); of the Python
roots and the shares, an inner folder is mounted over its outer one (a Python
inside a share stays read-only).
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence

HOME = "/root"  # a container's home, as in Modal's containers: private and empty
SYSTEM_LINKS = ("bin", "lib", "lib64", "sbin")  # merged-/usr links of Debian and others
NAME_FILES = ("/etc/resolv.conf", "/etc/hosts")  # the host's name resolution, in a container with its own /
DRIVER_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64")
DRIVER_LIBRARIES = ("libcuda.so*", "libnvidia-*.so*", "libcudadebugger.so*", "libnvcuvid.so*")
DRIVER_TOOLS = ("nvidia-smi",)
DRIVER_INSIDE = "/usr/local/nvidia"  # where a container with its own / finds the host's driver (lib64/, bin/)
GPU_DEVICE_ROOT_ENV = "REMOTECELL_FAKE_GPU_DEVICES"  # tests: a folder of stand-in device files instead of /dev
FORK_WAIT_S = 5.0  # how long the init may take to fork the container (it is a few ms)
PROBE_TIMEOUT_S = 10.0
SANDBOX_ENV = "REMOTECELL_SANDBOX"  # "0": containers run as plain processes
PLAIN = "containers run as plain processes that can read this runtime's state folder and the user's files"
USERNS_HINT = ("allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 "
               "an AppArmor profile for bwrap, or kernel.apparmor_restrict_unprivileged_userns=0)")
USERNS_SIGNS = ("namespace", "permission", "not permitted", "uid map")  # how bwrap says user namespaces are denied


class SandboxUnavailable(Exception):
    """Why containers cannot be sandboxed on this host, and how to fix it."""


class ShareRefused(ValueError):
    """A shared folder the runtime will not bind into containers."""


class Bubblewrap:
    """Makes the bwrap command line of one container; one per runtime.

    Example::

        sandbox = Bubblewrap.find(sock_dir="/home/u/.remotecell/sock", hidden="/home/u/.remotecell",
                               shares=["/data/shared"])
        argv = sandbox.argv(["python", "-m", "remotecell_runtime.container"], info_fd=5)
    """

    def __init__(self, bwrap: str, version: str, sock_dir: str, python_roots: list[str],
                 shares: Iterable[str] = ()) -> None:
        self.bwrap = bwrap
        self.version = version
        self.sock_dir = sock_dir
        self.python_roots = python_roots
        self.shares = sorted(shares)  # host folders bound read-write at their own paths

    @classmethod
    def find(cls, sock_dir: str, hidden: str, shares: Iterable[str] = ()) -> Bubblewrap:
        """The sandbox of this host, tried once; nothing under ``hidden`` is ever bound.

        Raises ``SandboxUnavailable`` without bubblewrap, or where it cannot make a sandbox
        (user namespaces not allowed: typical inside unprivileged containers).
        """
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed; install it (apt install bubblewrap)")
        sandbox = cls(bwrap, "", sock_dir, python_roots(hidden), shares)  # its version: asked when shown
        sandbox.probe()
        return sandbox

    def probe(self) -> None:
        """Run ``true`` in a sandbox as containers get them; ``SandboxUnavailable`` says why it failed."""
        try:
            done = subprocess.run(self.argv(["true"]), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(f"{self.bwrap} could not be run: {exc}") from exc
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            hint = f"; {USERNS_HINT}" if any(w in said.lower() for w in USERNS_SIGNS) else ""
            raise SandboxUnavailable(f"bubblewrap cannot make a sandbox here ({said}){hint}")

    def describe(self) -> str:
        """For the status: the version (asked of bwrap once, not at the runtime's start), and the shared folders."""
        if not self.version:
            try:
                said = subprocess.run([self.bwrap, "--version"], capture_output=True, text=True,
                                      timeout=PROBE_TIMEOUT_S).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                said = ""
            self.version = said or "bubblewrap"
        return self.version + (f", sharing {', '.join(self.shares)}" if self.shares else "")

    def argv(self, command: list[str], *, info_fd: int | None = None, volumes: Mapping[str, str] | None = None,
             extra_roots: Iterable[str] = (), files: Iterable[tuple[str, str]] = (), workdir: str | None = None,
             block_network: bool = False, gpu_minors: Sequence[int] | None = (),
             rootfs: str | None = None, socket: tuple[str, str] | None = None,
             disk_mib: int | None = None) -> list[str]:
        """bwrap's command line around ``command``; ``volumes``: mount path -> host folder; ``extra_roots``:
        more host folders it reads (an image's venv and interpreter); ``files``: (host folder, container path),
        each entry of the folder bound read-only there, in order; ``workdir``: its working directory (made
        if nothing is there); ``info_fd``: where bwrap writes its init's pid (see ``container_pid``);
        ``gpu_minors``: the container's GPUs by device minor number (none by default; None: GPUs whose
        numbers are unknown, every one); ``rootfs``: a host folder that is its ``/`` (read-only) instead of the
        host's ``/usr`` and ``/etc`` (an image with system steps), with the host's name resolution bound in;
        ``socket``: (host socket, path inside) bound alone instead of the runtime's socket folder (an
        ``rc.Sandbox`` agent's own socket: nothing else of the state folder shows); ``disk_mib``: how much each
        of its writable folders (``/tmp``, the home) may hold (``ephemeral_disk=``; past it, writes fail with
        ENOSPC)."""
        args = [self.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--cap-drop", "ALL"]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        if block_network:
            args.append("--unshare-net")
        roots = _outermost([*self.python_roots, *extra_roots])
        files = list(files)
        devices = gpu_devices(gpu_minors)
        driver = driver_files() if devices and rootfs else []  # an image's own system lacks the host's driver
        if rootfs is None:
            args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
            for name in SYSTEM_LINKS:
                args += _system_link(name)
        else:
            names = [n for n in NAME_FILES if os.path.exists(n)]
            sockets = socket[1] if socket else self.sock_dir
            bound = [*roots, *self.shares, sockets, *(volumes or {}), *names, *(workdir and [workdir] or []),
                     *(inside for _, inside in driver),
                     *(posixpath.join(dest, entry) for folder, dest in files for entry in os.listdir(folder))]
            args += rootfs_binds(rootfs, bound)
            for name in names:
                args += ["--ro-bind", name, name]
        args += ["--proc", "/proc", "--dev", "/dev", "--bind", "/dev/shm", "/dev/shm"]
        for device, inside in devices:
            args += ["--dev-bind", device, inside]
        for library, inside in driver:
            args += ["--ro-bind", library, inside]
        if devices:  # the CUDA driver reads the devices' PCI topology there: cuInit fails without it
            args += ["--ro-bind", "/sys", "/sys"]
        size = ["--size", str(disk_mib << 20)] if disk_mib else []
        args += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", HOME]
        args += _folder_binds(roots, self.shares)
        args += ["--bind", *socket] if socket else ["--bind", self.sock_dir, self.sock_dir]
        for path, folder in sorted((volumes or {}).items()):
            args += ["--bind", folder, path]
        args += _file_binds(files)
        if workdir:
            args += ["--dir", workdir]
        args += ["--chdir", workdir or HOME, "--setenv", "HOME", HOME, "--"]
        return args + command


def container_pid(info_fd: int) -> int | None:
    """The container's pid (as this host sees it), or None when bwrap or its init failed first.

    bwrap's info pipe (closed here) names its init; the container is that init's one child.
    """
    init = _init_pid(info_fd)
    deadline = time.monotonic() + FORK_WAIT_S
    while init is not None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{init}/task/{init}/children") as f:
                children = f.read().split()
        except OSError:
            return None  # the init is gone: the container ended (or never started)
        if children:
            return int(children[0])
        time.sleep(0.001)  # a blocking helper thread of the backend: the fork is a few ms away
    return None


def _init_pid(info_fd: int) -> int | None:
    """Read until the JSON is whole, not to the end: the pipe may stay open as long as the sandbox."""
    data = b""
    with os.fdopen(info_fd, "rb", buffering=0) as info:
        while chunk := info.read(4096):
            data += chunk
            try:
                return int(json.loads(data)["child-pid"])
            except ValueError:
                continue  # not whole yet
            except (KeyError, TypeError):
                return None
    return None


def python_roots(hidden: str) -> list[str]:
    """Where this runtime's Python and its packages live (what a container imports), none inside ``hidden``."""
    hidden = os.path.realpath(hidden)
    # sys.path[0] of ``python -m`` is the folder it was started in (often a home): not an import root.
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the folder it was started in is gone (an on-demand runtime started from a temporary one)
        cwd = None
    paths = sys.path[1:] if sys.path and sys.path[0] in ("", cwd) else sys.path
    candidates = [sys.base_prefix, sys.prefix, os.path.dirname(sys.executable),
                  *(p for p in paths if p and os.path.isdir(p))]
    if sys.pycache_prefix and os.path.isdir(sys.pycache_prefix):  # cached bytecode: a container compiles nothing
        candidates.append(sys.pycache_prefix)
    roots = []
    for path in candidates:
        real = os.path.realpath(path)
        if real == "/" or _inside(real, hidden) or _inside(hidden, real) or _inside(real, "/usr"):
            continue  # never the state folder, nor a folder holding it; /usr is bound anyway
        roots.append(real)
    return _outermost(roots)


def checked_shares(paths: Iterable[str], state_dir: str) -> list[str]:
    """``paths`` resolved, outermost only; ``ShareRefused`` for one that is no folder or meets the state folder."""
    state = os.path.realpath(state_dir)
    shares = []
    for path in paths:
        real = os.path.realpath(os.path.expanduser(path))
        if not os.path.isdir(real):
            raise ShareRefused(f"shared folder {path}: no such folder")
        if _inside(state, real) or _inside(real, state):
            raise ShareRefused(f"shared folder {path}: it holds or lies in the runtime's state folder {state} "
                               "(its keys, tokens and databases are never shown to containers); share a "
                               "folder beside it, or move the state folder (--state-dir, REMOTECELL_HOME)")
        shares.append(real)
    return _outermost(shares)


def _folder_binds(read_only: list[str], shared: list[str]) -> list[str]:
    """Outer folders first, so an inner one is mounted over its outer one: a Python inside a share
    stays read-only, a share inside a Python root stays writable."""
    binds = sorted([(root, "--ro-bind") for root in read_only] + [(share, "--bind") for share in shared])
    return [arg for path, flag in binds for arg in (flag, path, path)]


def _outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another of them, sorted."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return kept


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _file_binds(files: Iterable[tuple[str, str]]) -> list[str]:
    """Each entry of each folder at its container path: not the folder over the path, so two steps that put
    files in one folder (or in the private home) both show, and a later one wins over an earlier one."""
    args = []
    for folder, dest in files:
        for entry in sorted(os.listdir(folder)):
            args += ["--ro-bind", os.path.join(folder, entry), posixpath.join(dest, entry)]
    return args


def rootfs_binds(rootfs: str, bound: Iterable[str]) -> list[str]:
    """``rootfs`` as the container's ``/``, read-only, with room for the paths ``bound`` later.

    The root stays bwrap's own (a private tmpfs) and each entry of ``rootfs`` is bound at its place, so a
    mount point made for a later bind is never made in the image's folder (nor refused as read-only): a
    folder of the image that lacks a path bound below it is made anew and its entries bound one by one,
    down to where the path leaves the image.  Paths below the container's private ``/tmp`` and home and
    its ``/dev`` and ``/proc`` need no room: those are mounted over anyway."""
    wanted = [p for p in (posixpath.normpath(b) for b in bound)
              if p != "/" and not any(_inside(p, m) for m in ("/tmp", HOME, "/dev", "/proc"))
              and not os.path.lexists(rootfs + p)]
    return _entries(rootfs, "/", wanted)


def _entries(rootfs: str, folder: str, wanted: list[str]) -> list[str]:
    args = []
    for entry in sorted(os.listdir(rootfs + folder)):
        inside = posixpath.join(folder, entry)
        host = rootfs + inside
        below = [p for p in wanted if p.startswith(inside + "/")]
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), inside]
        elif below and os.path.isdir(host):
            args += ["--dir", inside, *_entries(rootfs, inside, below)]
        else:
            args += ["--ro-bind", host, inside]
    return args


def _system_link(name: str) -> list[str]:
    path = f"/{name}"
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if os.path.isdir(path):
        return ["--ro-bind", path, path]
    return []


def driver_files() -> list[tuple[str, str]]:
    """(host file, path inside) of the NVIDIA driver's user-space part (``libcuda``, ``libnvidia-*``,
    ``nvidia-smi``) for a container with its own root filesystem: under ``DRIVER_INSIDE``, as NVIDIA's container
    toolkit puts them (CUDA images have ``/usr/local/nvidia/lib64`` on ``LD_LIBRARY_PATH``)."""
    found = []
    for folder in DRIVER_LIBRARY_DIRS:
        for pattern in DRIVER_LIBRARIES:
            found += [(f, f"{DRIVER_INSIDE}/lib64/{os.path.basename(f)}") for f in glob.glob(f"{folder}/{pattern}")]
    for tool in DRIVER_TOOLS:
        path = shutil.which(tool)
        if path:
            found.append((path, f"{DRIVER_INSIDE}/bin/{tool}"))
    return sorted(dict((inside, (f, inside)) for f, inside in found).values(), key=lambda p: p[1])


def gpu_devices(minors: Sequence[int] | None) -> list[tuple[str, str]]:
    """(host file, path inside) of the GPU device files a container with GPUs ``minors`` gets: those GPUs'
    own ``nvidia<minor>``, and the driver's shared files (``nvidiactl``, ``nvidia-uvm``, ``nvidia-caps``...)."""
    if minors is not None and not minors:
        return []
    root = os.environ.get(GPU_DEVICE_ROOT_ENV, "/dev")
    files = sorted(glob.glob(os.path.join(root, "nvidia*")))
    if not files:
        return []
    own = None if minors is None else {f"nvidia{m}" for m in minors}
    picked = [f for f in files if own is None or not os.path.basename(f)[6:].isdigit()
              or os.path.basename(f) in own]
    dri = [] if root != "/dev" or not os.path.isdir("/dev/dri") else ["/dev/dri"]
    return [(f, os.path.join("/dev", os.path.basename(f))) for f in [*picked, *dri]]
