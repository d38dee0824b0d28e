"""A volume's files, reached only beneath its folder: each path walked one component at a time, no link followed.

Invariants:

- a path is read lexically first (``protocol.messages.volumes.parts``): ``..`` may not climb above the volume's
  root, so every path names the root or something beneath it;
- every component is then opened relative to its parent's descriptor with ``O_NOFOLLOW``,
  so a symbolic link (one a container made, say, pointing at the runtime's keys) is never
  followed, whatever changes between a check and its use: the file API lists links,
  copies and removes them as links, and never reads or writes through one;
- files land whole: written aside (``Staging``, on the volumes' own filesystem) and
  renamed into place, so a reader never sees half a file and a failed upload leaves
  nothing in the volume; without ``force`` a file is linked into place (``link`` fails on
  a name that exists) rather than renamed over what is there; a directory is never
  replaced by a file.

The refusals are ``VolumePathError`` (outside the volume, through a link, not a
directory, ...), ``FileNotFoundError`` and ``FileExistsError``, each with a message
that names the path as the volume sees it.  Nothing here knows about messages or the
event loop: the daemon runs it on worker threads (``services/volume_files.py``).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .protocol.messages.volumes import FileEntryType, Parts, VolumeEntry, VolumePathError, parts

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO a container left there must not hang a worker thread.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MKDIR_MODE = 0o755


def shown(at: Parts) -> str:
    """A path as the volume sees it (the root is ``/``)."""
    return "/".join(at) or "/"


def entry_type(mode: int) -> FileEntryType:
    for test, kind in ((stat.S_ISREG, FileEntryType.FILE), (stat.S_ISDIR, FileEntryType.DIRECTORY),
                       (stat.S_ISLNK, FileEntryType.SYMLINK), (stat.S_ISFIFO, FileEntryType.FIFO),
                       (stat.S_ISSOCK, FileEntryType.SOCKET)):
        if test(mode):
            return kind
    return FileEntryType.UNSPECIFIED


def _entry(at: Parts, st: os.stat_result) -> VolumeEntry:
    kind = entry_type(st.st_mode)
    return VolumeEntry(path=shown(at), type=int(kind), mtime=int(st.st_mtime),
                       size=st.st_size if kind != FileEntryType.DIRECTORY else 0)


def _refusal(fd: int, name: str, at: Parts) -> VolumePathError:
    """Why ``name`` (in the folder ``fd``) cannot be opened as a folder: a link, or not a folder at all."""
    if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
        return VolumePathError(f"{shown(at)!r} is a symbolic link: the volume file API does not follow links")
    return VolumePathError(f"{shown(at)!r} is not a directory")


def _child_dir(fd: int, name: str, at: Parts, create: bool) -> int:
    """The folder ``name`` of the folder ``fd``, made first when ``create`` and missing."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise FileNotFoundError(f"no {shown(at)!r} in the volume") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refusal(fd, name, at) from None
        raise
    try:
        os.mkdir(name, _MKDIR_MODE, dir_fd=fd)
    except FileExistsError:
        pass  # made meanwhile: opened (and checked) below
    return _child_dir(fd, name, at, create=False)


def _open_file(fd: int, name: str, at: Parts) -> tuple[int, os.stat_result]:
    """The regular file ``name`` of the folder ``fd``, open for reading, and its status."""
    try:
        f = os.open(name, _READ_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        raise FileNotFoundError(f"no file {shown(at)!r} in the volume") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VolumePathError(f"{shown(at)!r} is a symbolic link: the volume file API does not follow "
                                  "links") from None
        raise
    st = os.fstat(f)
    if not stat.S_ISREG(st.st_mode):
        os.close(f)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise VolumePathError(f"{shown(at)!r} is {kind}, not a file")
    return f, st


@dataclass(frozen=True)
class Move:
    """One thing to put in place: the staged file ``src`` (a name in the staging folder) at ``dest``; no
    ``src``: make the directory ``dest``.  ``mode``: set on the staged file first (None: keep its own)."""

    src: str | None
    dest: Parts
    mode: int | None = None


class Tree:
    """One volume's folder and the file operations on it, all beneath it (see the module's invariants)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def directory(self, at: Parts, create: bool = False) -> Iterator[int]:
        """The folder ``at`` open (a descriptor), its missing folders made when ``create``."""
        fd = os.open(self.root, _DIR_FLAGS)
        for i, name in enumerate(at):
            try:
                child = _child_dir(fd, name, at[: i + 1], create)
            finally:
                os.close(fd)
            fd = child
        try:
            yield fd
        finally:
            os.close(fd)

    def lstat(self, at: Parts) -> os.stat_result | None:
        """The status of ``at`` itself (a link is a link), None when it is not there."""
        try:
            with self.directory(at[:-1]) as fd:
                return os.stat(at[-1], dir_fd=fd, follow_symlinks=False) if at else os.fstat(fd)
        except FileNotFoundError:
            return None

    def entries(self, at: Parts, recursive: bool) -> Iterator[VolumeEntry]:
        """What ``listdir`` shows: a file itself; a folder's entries (all of them below it when ``recursive``),
        sorted by name, a folder before what is in it."""
        st = self.lstat(at)
        if st is None:
            raise FileNotFoundError(f"no {shown(at)!r} in the volume")
        if not stat.S_ISDIR(st.st_mode):
            yield _entry(at, st)
            return
        with self.directory(at) as fd:
            yield from _listing(fd, at, recursive)

    def read(self, at: Parts, offset: int, length: int, version: str | None) -> tuple[bytes, int, str]:
        """``length`` bytes of the file ``at`` from ``offset``, its size and its version (inode, mtime, size):
        a ``version`` given that is no longer the file's is refused."""
        if not at:
            raise VolumePathError("'/' is the volume's root directory, not a file")
        with self.directory(at[:-1]) as fd:
            f, st = _open_file(fd, at[-1], at)
        try:
            now = f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
            if version not in (None, now):
                raise VolumePathError(f"{shown(at)!r} changed while it was read; read it again")
            return os.pread(f, max(0, length), max(0, offset)), st.st_size, now
        finally:
            os.close(f)

    def remove(self, at: Parts, recursive: bool) -> None:
        """Remove a file or link, or a folder and everything in it when ``recursive``."""
        if not at:
            raise VolumePathError("cannot remove the volume's root: delete the volume itself "
                                  "(rc.Volume.objects.delete(NAME), remotecell volume delete NAME)")
        with self.directory(at[:-1]) as fd:
            try:
                st = os.stat(at[-1], dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise FileNotFoundError(f"no {shown(at)!r} in the volume") from None
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(at[-1], dir_fd=fd)
            elif not recursive:
                raise VolumePathError(f"{shown(at)!r} is a directory: remove it with recursive=True "
                                      "(remotecell volume rm -r)")
            else:
                shutil.rmtree(at[-1], dir_fd=fd)  # the descriptor-based walk: it never follows links

    def place(self, source: Path, moves: Sequence[Move], force: bool) -> None:
        """Put the staged files of folder ``source`` in place; every path is checked before any is placed."""
        self._check_places(moves, force)
        src_fd = os.open(source, _DIR_FLAGS)
        try:
            for move in moves:
                self._place(src_fd, move, force)
        finally:
            os.close(src_fd)

    def _check_places(self, moves: Sequence[Move], force: bool) -> None:
        existing = []
        for move in moves:
            if not move.dest:
                if move.src is None:
                    continue
                raise VolumePathError("a file cannot take the place of the volume's root directory")
            st = self.lstat(move.dest)
            if st is None or (move.src is None and stat.S_ISDIR(st.st_mode)):
                continue
            if move.src is None:
                raise VolumePathError(f"{shown(move.dest)!r} exists in the volume and is not a directory")
            if stat.S_ISDIR(st.st_mode):
                raise VolumePathError(f"{shown(move.dest)!r} is a directory in the volume: a file cannot replace it")
            existing.append(shown(move.dest))
        if existing and not force:
            more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
            verb = "exists" if len(existing) == 1 else "exist"
            raise FileExistsError(f"{', '.join(map(repr, existing[:5]))}{more} already {verb} in the volume; nothing "
                                  "was written. Pass force=True (remotecell volume put --force) to overwrite")

    def _place(self, src_fd: int, move: Move, force: bool) -> None:
        if move.src is None:
            with self.directory(move.dest, create=True):
                return
        if move.mode is not None:
            f = os.open(move.src, _READ_FLAGS, dir_fd=src_fd)  # a staged upload: a regular file of ours
            try:
                os.fchmod(f, move.mode)
            finally:
                os.close(f)
        with self.directory(move.dest[:-1], create=True) as fd:
            if force:
                os.replace(move.src, move.dest[-1], src_dir_fd=src_fd, dst_dir_fd=fd)
            else:
                os.link(move.src, move.dest[-1], src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)

    def copy(self, sources: Sequence[Parts], dst: Parts, recursive: bool, work: Path, into: bool = False) -> None:
        """``cp`` within the volume (``-r`` when ``recursive``): into ``dst`` when it is a directory (or ``into``:
        the path ended in ``/``; made when missing), else to it (one source only).  Copies are made in the staging
        folder ``work``, then placed over what is there."""
        dst_st = self.lstat(dst)
        is_dir = dst_st is not None and stat.S_ISDIR(dst_st.st_mode)
        if dst_st is not None and into and not is_dir:
            raise VolumePathError(f"{shown(dst)!r} is not a directory")
        into = into or is_dir
        if len(sources) > 1 and not into:
            raise VolumePathError(f"copying {len(sources)} paths needs {shown(dst)!r} to be a directory in the volume")
        copier = _Copier(self, work)
        if into and not is_dir:
            copier.moves.append(Move(None, dst))
        for src in sources:
            if not src:
                raise VolumePathError("the volume's root cannot be copied; copy what is in it")
            target = dst + (src[-1],) if into else dst
            if target[: len(src)] == src:
                raise VolumePathError(f"cannot copy {shown(src)!r} onto or into itself")
            copier.add(src, target, recursive)
        self.place(work, copier.moves, force=True)


def _listing(fd: int, at: Parts, recursive: bool) -> Iterator[VolumeEntry]:
    with os.scandir(fd) as found:
        children = sorted(found, key=lambda e: e.name)
    for child in children:
        here = at + (child.name,)
        yield _entry(here, child.stat(follow_symlinks=False))
        if recursive and child.is_dir(follow_symlinks=False):
            try:
                sub = _child_dir(fd, child.name, here, create=False)
            except (FileNotFoundError, VolumePathError):
                continue  # gone, or swapped for a link, since it was listed
            try:
                yield from _listing(sub, here, recursive)
            finally:
                os.close(sub)


class _Copier:
    """The staged copies of a ``cp``: each file copied into the staging folder under a number, then a ``Move``."""

    def __init__(self, tree: Tree, work: Path) -> None:
        self.tree = tree
        self.work = work
        self.moves: list[Move] = []
        work.mkdir(parents=True, exist_ok=True)

    def add(self, src: Parts, target: Parts, recursive: bool) -> None:
        st = self.tree.lstat(src)
        if st is None:
            raise FileNotFoundError(f"no {shown(src)!r} in the volume")
        if not stat.S_ISDIR(st.st_mode):
            self._stage(src, target, st)
            return
        if not recursive:
            raise VolumePathError(f"{shown(src)!r} is a directory: copy it with recursive=True "
                                  "(remotecell volume cp -r)")
        self.moves.append(Move(None, target))
        for entry in self.tree.entries(src, recursive=True):
            inner = parts(entry.path)
            here = target + inner[len(src):]
            if entry.type == FileEntryType.DIRECTORY:
                self.moves.append(Move(None, here))
            elif entry.type in (FileEntryType.FILE, FileEntryType.SYMLINK):
                self._stage(inner, here, self.tree.lstat(inner))

    def _stage(self, src: Parts, target: Parts, st: os.stat_result | None) -> None:
        name = str(len(self.moves))
        with self.tree.directory(src[:-1]) as fd:
            if st is not None and stat.S_ISLNK(st.st_mode):  # copied as the link it is, never followed
                os.symlink(os.readlink(src[-1], dir_fd=fd), self.work / name)
            else:
                f, st = _open_file(fd, src[-1], src)
                try:
                    _copy_bytes(f, self.work / name, st)
                finally:
                    os.close(f)
        self.moves.append(Move(name, target))


def _copy_bytes(f: int, to: Path, st: os.stat_result) -> None:
    out = os.open(to, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, stat.S_IMODE(st.st_mode))
    try:
        offset = 0
        while offset < st.st_size:
            sent = os.sendfile(out, f, offset, st.st_size - offset)
            if sent == 0:
                break  # shorter than it was: copied as it is now
            offset += sent
    finally:
        os.close(out)


class Staging:
    """Uploads and copies on their way into volumes: ``root/<id>/<n>``, beside the volumes (one rename away).

    Only the daemon writes here, and nothing here is mounted into a container.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, upload: str) -> Path:
        return self.root / upload

    def write(self, upload: str, file: int, offset: int, data: memoryview) -> None:
        """Chunk ``data`` of staged file ``file`` at ``offset`` (chunks may come in any order)."""
        folder = self.folder(upload)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / str(file), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], offset + done)
        finally:
            os.close(fd)

    def sized(self, upload: str, file: int, size: int) -> str:
        """The staged file's name, after checking that it holds ``size`` bytes (an empty one is made here)."""
        path = self.folder(upload) / str(file)
        if size == 0 and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(0o600)
        got = path.stat().st_size if path.exists() else 0
        if got != size:
            raise VolumePathError(f"file {file} of upload {upload} was to be {size} bytes but {got} arrived; "
                                  "nothing was written (upload it again)")
        return path.name

    def drop(self, upload: str) -> None:
        shutil.rmtree(self.folder(upload), ignore_errors=True)

    def clear(self) -> None:
        """Everything staged (at start: uploads of the runtime's last life are never finished)."""
        shutil.rmtree(self.root, ignore_errors=True)
