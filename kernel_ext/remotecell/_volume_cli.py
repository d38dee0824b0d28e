"""``remotecell volume ...``: Modal's ``modal volume`` commands, with its argument shapes, over ``rc.Volume``.

    remotecell volume create NAME                  make a named volume
    remotecell volume list [--json]                the named volumes
    remotecell volume ls NAME [PATH] [--json]      a folder's entries (paths only when not on a terminal)
    remotecell volume put NAME LOCAL [REMOTE] [-f] upload a file or a folder (REMOTE ending in / keeps its name)
    remotecell volume get NAME REMOTE [LOCAL] [--force]   download a file or a folder; LOCAL "-": to stdout
    remotecell volume rm NAME PATH [-r]            remove a file, or a folder with -r
    remotecell volume cp NAME SRC... DST [-r]      copy within the volume, as cp does
    remotecell volume delete NAME [-y] [--allow-missing]   delete a volume and all its files

An existing file is never overwritten without ``--force`` (put: in the volume; get:
on this machine).  What goes wrong is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from remotecell_runtime.protocol.messages.volumes import parts

from .exceptions import InvalidError
from .volumes import FileEntry, FileEntryType, Volume

_KINDS = {FileEntryType.FILE: "file", FileEntryType.DIRECTORY: "dir", FileEntryType.SYMLINK: "link",
          FileEntryType.FIFO: "fifo", FileEntryType.SOCKET: "socket"}


def add_parser(sub: Any) -> None:
    """The ``volume`` command and its subcommands, on the ``remotecell`` parser's subparsers ``sub``."""
    volume = sub.add_parser("volume", help="named volumes and their files: create, list, ls, put, get, rm, cp, "
                                           "delete", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = volume.add_subparsers(dest="action", required=True)
    actions.add_parser("create", help="make a named volume").add_argument("name")
    actions.add_parser("list", help="the named volumes").add_argument("--json", action="store_true")
    ls = actions.add_parser("ls", help="list files and folders of a volume")
    ls.add_argument("name")
    ls.add_argument("path", nargs="?", default="/")
    ls.add_argument("--json", action="store_true")
    put = actions.add_parser("put", help="upload a file or folder to a volume")
    put.add_argument("name")
    put.add_argument("local_path")
    put.add_argument("remote_path", nargs="?", default="/")
    put.add_argument("-f", "--force", action="store_true", help="overwrite files that exist")
    get = actions.add_parser("get", help="download a file or folder from a volume ('-' as LOCAL: to stdout)")
    get.add_argument("name")
    get.add_argument("remote_path")
    get.add_argument("local_destination", nargs="?", default=".")
    get.add_argument("--force", action="store_true", help="overwrite local files that exist")
    rm = actions.add_parser("rm", help="remove a file or folder from a volume")
    rm.add_argument("name")
    rm.add_argument("remote_path")
    rm.add_argument("-r", "--recursive", action="store_true", help="remove a folder and all in it")
    cp = actions.add_parser("cp", help="copy within a volume: SRC... DST")
    cp.add_argument("name")
    cp.add_argument("paths", nargs="+")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy folders")
    delete = actions.add_parser("delete", help="delete a named volume and all its files")
    delete.add_argument("name")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask first")
    delete.add_argument("--allow-missing", action="store_true", help="no error when there is no such volume")


def cmd_volume(args: argparse.Namespace) -> int:
    return ACTIONS[args.action](args)


def _create(args: argparse.Namespace) -> int:
    Volume.objects.create(args.name)
    print(f"created volume {args.name!r}; mount it with "
          f"@app.function(volumes={{'/data': rc.Volume.from_name({args.name!r})}})")
    return 0


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _list(args: argparse.Namespace) -> int:
    volumes = Volume.objects.list()
    infos = [v.info() for v in volumes]
    if args.json:
        print(json.dumps([{"name": i.name, "created_at": i.created_at.isoformat(), "object_id": v.object_id}
                          for v, i in zip(volumes, infos, strict=True)], indent=2))
    for info in [] if args.json else infos:
        print(f"{info.name}\tcreated {_when(info.created_at.timestamp())}")
    if not volumes and not args.json:
        print("no volumes")
    return 0


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("not reached")


def _ls(args: argparse.Namespace) -> int:
    entries = Volume.from_name(args.name).listdir(args.path)
    if args.json:
        print(json.dumps([{"path": e.path, "type": _KINDS.get(e.type, "unknown"), "mtime": e.mtime, "size": e.size}
                          for e in entries], indent=2))
    elif not sys.stdout.isatty():  # as Modal's: one path a line, for scripts
        for entry in entries:
            print(entry.path)
    else:
        for entry in entries:
            print(f"{entry.path}\t{_KINDS.get(entry.type, 'unknown')}\t{_when(entry.mtime)}\t{_size(entry.size)}")
    return 0


def _put(args: argparse.Namespace) -> int:
    if "*" in args.local_path:
        raise InvalidError("glob uploads are not supported: put a file or a folder")
    local = Path(args.local_path)
    if not local.exists():
        raise FileNotFoundError(f"no {local} on this machine")
    remote = args.remote_path
    if remote.endswith("/"):  # as Modal's: the file or folder keeps its name ("dir/" puts what is in it)
        remote += os.path.basename(args.local_path)
    with Volume.from_name(args.name).batch_upload(force=args.force) as batch:
        if local.is_dir():
            batch.put_directory(local, remote)
        else:
            batch.put_file(local, remote)
    print(f"uploaded {'folder' if local.is_dir() else 'file'} {str(local)!r} to {remote!r} in volume {args.name!r}")
    return 0


def _get(args: argparse.Namespace) -> int:
    volume = Volume.from_name(args.name)
    entries = [e for e in volume.iterdir(args.remote_path, recursive=True)]
    if args.local_destination == "-":
        for entry in entries:
            if entry.type == FileEntryType.FILE:
                for chunk in volume.read_file(entry.path):
                    sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return 0
    targets = _targets(entries, args.remote_path, Path(args.local_destination))
    existing = [str(t) for t, _ in targets if t.exists() and not t.is_dir()]
    if existing and not args.force:
        raise FileExistsError(f"{', '.join(existing[:5])} already exist{'s' if len(existing) == 1 else ''} here; "
                              "pass --force to overwrite")
    for target, entry in targets:
        _download(volume, entry, target)
    files = sum(1 for _, e in targets if e.type == FileEntryType.FILE)
    print(f"downloaded {files} file{'s' if files != 1 else ''} to {args.local_destination}")
    return 0


def _targets(entries: list[FileEntry], remote: str, destination: Path) -> list[tuple[Path, FileEntry]]:
    """Where each listed entry goes: below ``destination`` when it is a folder here (with the remote path's last
    name), else at it (one file: that file; a folder: its contents, as ``cp -r``)."""
    top = parts(remote)
    single = len(entries) == 1 and entries[0].type != FileEntryType.DIRECTORY and entries[0].path == "/".join(top)
    if single:
        return [(destination / top[-1] if destination.is_dir() else destination, entries[0])]
    keep = len(top) - 1 if destination.is_dir() else len(top)  # into a folder: the remote folder's name too
    return [(destination.joinpath(*parts(e.path)[max(keep, 0):]), e) for e in entries]


def _download(volume: Volume, entry: FileEntry, target: Path) -> None:
    if entry.type == FileEntryType.DIRECTORY:
        target.mkdir(parents=True, exist_ok=True)
    elif entry.type == FileEntryType.FILE:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        with open(partial, "wb") as out:
            volume.read_file_into_fileobj(entry.path, out)
        os.replace(partial, target)  # whole or not at all, as in the volume


def _rm(args: argparse.Namespace) -> int:
    Volume.from_name(args.name).remove_file(args.remote_path, recursive=args.recursive)
    print(f"removed {args.remote_path!r} from volume {args.name!r}")
    return 0


def _cp(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise InvalidError("cp needs a source and a destination: remotecell volume cp NAME SRC... DST")
    *sources, destination = args.paths
    Volume.from_name(args.name).copy_files(sources, destination, recursive=args.recursive)
    return 0


def _delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidError(f"deleting volume {args.name!r} removes all its files for good: pass --yes")
        answer = input(f"Delete volume {args.name!r} and all its files for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    Volume.objects.delete(args.name, allow_missing=args.allow_missing)
    print(f"deleted volume {args.name!r}")
    return 0


ACTIONS = {"create": _create, "list": _list, "ls": _ls, "put": _put, "get": _get, "rm": _rm, "cp": _cp,
           "delete": _delete}
