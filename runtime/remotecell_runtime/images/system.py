"""System layers: the root filesystem of an image with ``apt_install``, ``run_commands``, ``run_function`` or a
registry base, made without touching the host.

An image's first system step gets a base system: a minimal Debian of the host's
own release and architecture, made once with ``mmdebstrap`` from the host's apt
sources (``base_release``; as root, else under fakechroot), holding the libraries the image's Python links (found
with ``ldd`` and ``dpkg -S``, so the host's interpreter, bound in read-only, runs
there), cached under ``STATE/images/systems/<key>``.  A registry base brings its
own root filesystem instead (``oci``).

Each system step runs over the layer below it as root in a sandbox of its own
(``StepSandbox``, with ``STEP_CAPS`` only): the parent's root filesystem is the lower folder of an
overlay mounted in a private mount namespace (``unshare``), bwrap runs the step
with that overlay as ``/`` (the image's venv, its interpreter and the runtime's
code bound read-only, the host's name resolution, a private ``/tmp``), and what
the step changed lands in the overlay's upper folder only.  The new layer's root
filesystem is a hard-link copy of the parent's with that upper folder applied
(``apply_upper``: whiteouts remove, opaque folders replace, everything else is a
new file renamed in).

Invariants: a committed root filesystem is never written: a step writes into the
overlay (a copy-up makes a new file), and the new layer's files are either links
to the parent's unchanged files or the step's own new files, so no inode is
shared with a file that changed; the mount points bwrap made for its binds are
pruned from the upper folder before it is applied (``prune``), so no host path
leaks into an image; a step never sees the runtime's state folder but its
image's own folders, read-only.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_LAYOUT = 1  # what a base system holds and how it is made (bump when that changes)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXTRA_PACKAGES = ("ca-certificates",)  # every base system: https from a container works
NAME_FILES = ("/etc/resolv.conf", "/etc/hosts")
# What a step's root may do (a container engine's default set, less MKNOD and NET_RAW: no device files, no raw
# sockets on the host's network): own, chmod and write the files it sees, switch users (apt's sandbox), chroot.
# Not SYS_ADMIN: the read-only binds stay read-only and nothing else is mounted.
STEP_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE",
             "SYS_CHROOT", "AUDIT_WRITE", "SETFCAP")
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
SETUP_HINT = "install it (apt install mmdebstrap; `make setup` does)"


class SystemUnavailable(Exception):
    """Why this host cannot make a base system (not Debian, no mmdebstrap, no overlay): what to do."""


@dataclass(frozen=True)
class Release:
    """What a base system is made from: the host's Debian release, its apt sources, and the packages it holds."""

    codename: str
    arch: str
    sources: tuple[str, ...]  # one-line "deb URI SUITE COMPONENTS" entries of the host for that release
    packages: tuple[str, ...]

    def key(self) -> str:
        body = json.dumps([SYSTEM_LAYOUT, self.codename, self.arch, self.sources, self.packages])
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def bootstrap(self, mmdebstrap: str, target: Path) -> list[str]:
        """The command that makes the base system in ``target`` (which must not exist yet): as root, or for
        another user under fakechroot (its files owned by that user, who is root in a step's namespace; its
        absolute links then name ``target``: ``fix_links``)."""
        mode = "root" if os.geteuid() == 0 else "fakechroot"
        return [mmdebstrap, "--variant=minbase", f"--mode={mode}", "--format=directory",
                f"--architectures={self.arch}", f"--include={','.join(self.packages)}",
                '--aptopt=Acquire::Retries "3"', self.codename, str(target), *self.sources]


def base_release(python_prefixes: Iterable[str]) -> Release:
    """The host's release, for a base system where the interpreters under ``python_prefixes`` run."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise SystemUnavailable(f"mmdebstrap is not installed on the runtime host: {SETUP_HINT}")
    info = _os_release()
    codename = info.get("VERSION_CODENAME") or ""
    if not codename or shutil.which("dpkg") is None:
        name = info.get("PRETTY_NAME")
        raise SystemUnavailable(f"the runtime host is not a Debian system with a release name ({name!r}): "
                                "apt_install, run_commands and run_function build a root filesystem of the "
                                "host's own Debian release; use Image.from_registry(...) for another system")
    if os.geteuid() != 0 and shutil.which("fakechroot") is None:
        raise SystemUnavailable("fakechroot is not installed on the runtime host (a runtime that does not run as "
                                "root makes its base system under it): apt install fakechroot; `make setup` does")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    packages = sorted({*EXTRA_PACKAGES, *python_packages(python_prefixes)})
    return Release(codename, arch or "amd64", tuple(host_sources(codename)), tuple(packages))


def describe_host(sandboxed: bool) -> str:
    """For the status: whether this host builds system images, with what, or ``off:`` and why."""
    if not sandboxed:
        return "off: they need the container sandbox"
    missing = [tool for tool in ("mmdebstrap", "unshare", "dpkg", *(() if os.geteuid() == 0 else ("fakechroot",)))
               if shutil.which(tool) is None]
    if missing:
        return f"off: {', '.join(missing)} not installed (`make setup` installs them on Debian)"
    try:
        overlay = "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        overlay = False
    if not overlay:
        return "off: the kernel has no overlay file system"
    codename = _os_release().get("VERSION_CODENAME") or "?"
    return f"Debian {codename} base systems with mmdebstrap ({'as root' if os.geteuid() == 0 else 'fakechroot'})"


def _os_release() -> dict[str, str]:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line)
    return {k: v.strip().strip('"') for k, v in pairs}


def host_sources(codename: str, root: str = "/etc/apt") -> list[str]:
    """The host's apt sources for ``codename`` (its suites ``codename`` and ``codename-*``) as one-line entries;
    other sources (vendors' repositories) are left out."""
    entries: list[tuple[str, str, str]] = []
    for path in [f"{root}/sources.list", *sorted(glob.glob(f"{root}/sources.list.d/*.list"))]:
        for line in _lines(path):
            words = line.split()
            if words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):  # options: [signed-by=... arch=...]
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 3:
                entries.append((words[0], words[1], " ".join(words[2:])))
    for path in sorted(glob.glob(f"{root}/sources.list.d/*.sources")):
        for stanza in _stanzas(_lines(path, keep_blank=True)):
            if "deb" not in stanza.get("types", "").split():
                continue
            for uri in stanza.get("uris", "").split():
                for suite in stanza.get("suites", "").split():
                    entries.append((uri, suite, stanza.get("components", "main")))
    kept = [f"deb {uri} {suite} {components}" for uri, suite, components in entries
            if suite == codename or suite.startswith(codename + "-")]
    return list(dict.fromkeys(kept))


def _lines(path: str, keep_blank: bool = False) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    lines = [line.split("#", 1)[0].rstrip() for line in text.splitlines()]
    return [line for line in lines if keep_blank or line.strip()]


def _stanzas(lines: list[str]) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*lines, ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif ":" in line and not line[0].isspace():
            name, _, value = line.partition(":")
            current[name.strip().lower()] = value.strip()
    return stanzas


def python_packages(prefixes: Iterable[str]) -> list[str]:
    """The Debian packages of the libraries the interpreters under ``prefixes`` and their extension modules
    link (``ldd``, then ``dpkg -S``), and of the interpreters themselves when they are the system's."""
    files: list[str] = []
    prefixes = sorted(set(prefixes))
    for prefix in prefixes:
        files += glob.glob(f"{prefix}/bin/python3*") + glob.glob(f"{prefix}/lib/libpython3*.so*")
        files += [f for f in glob.glob(f"{prefix}/lib/python3*/lib-dynload/*.so") if "_tkinter" not in f]
    libraries: set[str] = set()
    for path in files:
        try:
            said = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        libraries |= {line.split("=>")[1].split()[0] for line in said.splitlines()
                      if "=>" in line and line.split("=>")[1].strip().startswith("/")}
    owned = [os.path.realpath(f) for f in files if os.path.realpath(f).startswith("/usr/")]
    own = [p for p in prefixes if not p.startswith("/usr")]  # a Python of its own (pyenv, uv): its libraries bound
    wanted = sorted({*libraries, *owned} - {p for p in libraries if any(p.startswith(x + "/") for x in own)})
    # merged /usr: dpkg knows /lib/x/libc.so.6 under either name, so ask for both
    asked = sorted({*wanted, *(p if p.startswith("/usr/") else "/usr" + p for p in wanted)})
    if not asked:
        return []
    said = subprocess.run(["dpkg", "-S", *asked], capture_output=True, text=True).stdout
    return sorted({line.split(":")[0].strip() for line in said.splitlines() if ": /" in line})


@dataclass(frozen=True)
class Overlay:
    """An overlay mount of a build step: ``lower`` read-only, the step's writes in ``upper``, seen at ``merged``."""

    lower: Path
    upper: Path
    work: Path
    merged: Path

    def options(self, root: bool) -> str:
        for folder in (self.upper, self.work, self.merged):
            folder.mkdir(parents=True, exist_ok=True)
        for path in (self.lower, self.upper, self.work):
            if any(c in str(path) for c in ",:"):
                raise SystemUnavailable(f"the runtime's state folder {path} holds ',' or ':', which an overlay "
                                        "mount cannot name: move it (--state-dir, REMOTECELL_HOME)")
        options = f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}"
        return options + (",redirect_dir=off,metacopy=off" if root else ",userxattr")


@dataclass
class StepSandbox:
    """The command line of one build command of a system step: ``command`` as root over ``lower`` (read-only)
    with its changes written to ``upper``; ``binds`` (host path, container path, writable) bound in."""

    lower: Path
    upper: Path
    work: Path
    merged: Path
    binds: list[tuple[str, str, bool]] = field(default_factory=list)
    bound: set[str] = field(default_factory=set)  # every container path bound by a command line made so far
    venv: Overlay | None = None  # the image's venv, writable through an overlay of its own (at its own path)

    def argv(self, command: list[str], env: Mapping[str, str]) -> list[str]:
        root = os.geteuid() == 0
        overlays = [Overlay(self.lower, self.upper, self.work, self.merged), *([self.venv] if self.venv else [])]
        mounts = [arg for overlay in overlays for arg in (overlay.options(root), str(overlay.merged))]
        unshare = ["unshare", "--mount", "--propagation", "private"]
        if not root:
            unshare[1:1] = ["--user", "--map-root-user"]
        caps = [arg for cap in STEP_CAPS for arg in ("--cap-add", f"CAP_{cap}")]
        bwrap = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL",
                 *caps,
                 "--bind", str(self.merged), "/", "--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--tmpfs", "/tmp"]  # apt's own user writes there too
        for name in NAME_FILES:
            bwrap += ["--ro-bind-try", name, name]
        if self.venv is not None:
            bwrap += ["--bind", str(self.venv.merged), str(self.venv.lower)]
            self.bound.add(str(self.venv.lower))
        for host, inside, writable in self.binds:
            bwrap += ["--bind" if writable else "--ro-bind", host, inside]
            self.bound.add(inside)
        bwrap += ["--clearenv", *(a for k, v in sorted(env.items()) for a in ("--setenv", k, v)),
                  "--chdir", "/", "--"]
        mount = ('while [ "$1" != -- ]; do mount -t overlay overlay -o "$1" "$2" || exit 1; shift 2; done; '
                 'shift; exec "$@"')
        return [*unshare, "--", "sh", "-c", mount, "sh", *mounts, "--", *bwrap, *command]

    def mount_points(self) -> list[str]:
        """The paths bwrap may have made in the overlay for its mounts (pruned before the upper folder counts)."""
        return ["/proc", "/dev", "/tmp", *NAME_FILES, *sorted(self.bound)]


def prune(upper: Path, lower: Path, paths: Iterable[str]) -> None:
    """Remove from ``upper`` what bwrap made for mounting ``paths``: empty folders and files the lower folder
    does not have, from each path up."""
    for path in paths:
        rel = Path(path.lstrip("/"))
        while rel.parts:
            made = upper / rel
            if os.path.lexists(lower / rel) and os.path.isdir(lower / rel) == os.path.isdir(made):
                break  # the image has it: a copy-up, not a mount point
            try:
                if made.is_dir() and not made.is_symlink():
                    made.rmdir()  # only when empty: a folder the step filled stays
                elif made.is_file() and made.stat().st_size == 0:
                    made.unlink()
                else:
                    break
            except OSError:
                break
            rel = rel.parent


def fix_links(root: Path) -> int:
    """Absolute links under ``root`` that name ``root`` itself (fakechroot writes them so) made the image's own
    (``/usr/lib/...``); how many were."""
    prefix, fixed = str(root), 0
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.readlink(path)
                if target == prefix or target.startswith(prefix + "/"):
                    os.unlink(path)
                    os.symlink(target[len(prefix):] or "/", path)
                    fixed += 1
    return fixed


def link_tree(source: Path, target: Path) -> None:
    """``source`` copied as hard links (owners, modes and times of folders kept; links stay links)."""
    done = subprocess.run(["cp", "-a", "-l", str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"cp -al {source} {target}: {done.stderr.strip()}")


def apply_upper(upper: Path, target: Path) -> None:
    """Make ``target`` (a copy of the overlay's lower folder) what the overlay showed: whiteouts (character
    devices 0:0) remove, opaque folders replace, other entries are renamed into place."""
    folders: list[tuple[Path, os.stat_result]] = []
    for folder, dirs, names in os.walk(upper):
        here = target / Path(folder).relative_to(upper)
        for name in [*dirs, *names]:
            source, dest = Path(folder) / name, here / name
            info = os.lstat(source)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                _remove(dest)
            elif stat.S_ISDIR(info.st_mode):
                if _opaque(source) or (os.path.lexists(dest) and (dest.is_symlink() or not dest.is_dir())):
                    _remove(dest)
                if not dest.exists():
                    os.mkdir(dest)
                folders.append((dest, info))
            else:
                _remove(dest)
                os.rename(source, dest)
    for dest, info in reversed(folders):
        if os.geteuid() == 0:
            os.lchown(dest, info.st_uid, info.st_gid)
        os.chmod(dest, stat.S_IMODE(info.st_mode))
        os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))


def _opaque(folder: Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(folder, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def python_env(venv: Path, image_env: Mapping[str, str]) -> dict[str, str]:
    """A build command's variables: a root shell's, the image's, its venv first on ``PATH``."""
    env = {"HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "PATH": BASE_PATH,
           **image_env, "VIRTUAL_ENV": str(venv)}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return env
