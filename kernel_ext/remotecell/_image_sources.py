"""What an image reads on the client: local files (``add_local_*``), a build function (``run_function``), and
the requirement lists of a ``requirements.txt`` or a ``pyproject.toml``.

Local files travel as one tar per step, named by its sha256.  Invariant: the same
files (names, bytes, executable bit) give the same tar, byte for byte, wherever and
whenever it is made: members sorted by name, mtime 0, owner root (uid/gid 0, no
names), modes 0644 or 0755, regular files only (a symbolic link to a file is its
target's bytes; folders come with their files).  So an unchanged set of files has
the same digest and is neither uploaded again nor rebuilt.  Names in a tar are
relative to the step's folder in the container, made here from walks of the
user's paths, never with ``..``.

The files are read when the image is published (its app starts), not when the
method is called; the method checks only that the path or module is there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotecell_runtime.protocol import pickling
from remotecell_runtime.protocol.image_spec import ImageStep
from remotecell_runtime.protocol.messages.blobs import BLOB_MAX_BYTES

from ._user_modules import ship_module_by_value
from .exceptions import InvalidError
from .file_pattern_matcher import FilePatternMatcher

Ignore = Callable[[Path], bool]
PYTHON_SOURCE_ROOT = "/root"  # where add_local_python_source puts modules, as Modal does (on the containers' path)


@dataclass(frozen=True)
class _File:
    local: Path
    name: str  # in the tar


@dataclass(frozen=True)
class _Tree:
    root: Path
    prefix: str  # the names of its files in the tar start with it ("" for none)
    ignore: Ignore

    def files(self) -> Iterator[_File]:
        prune = isinstance(self.ignore, FilePatternMatcher) and self.ignore.can_prune_directories()
        for folder, dirs, names in os.walk(self.root):
            here = Path(folder).relative_to(self.root)
            if prune:  # a folder the patterns match holds nothing they would keep
                dirs[:] = [d for d in dirs if not self.ignore(here / d)]
            dirs.sort()
            for name in names:
                rel = here / name
                if not self.ignore(rel) and (self.root / rel).is_file():
                    yield _File(self.root / rel, posixpath.join(self.prefix, rel.as_posix()))


@dataclass(frozen=True)
class LocalFiles:
    """One ``add_local_*`` step: files for folder ``dest`` of the container, as a layer (``copy``) or put in place
    when a container starts."""

    dest: str
    copy: bool
    sources: tuple[_File | _Tree, ...]
    what: str  # the call that made it, for errors

    @property
    def is_layer(self) -> bool:
        return self.copy

    def files(self) -> list[_File]:
        found: dict[str, _File] = {}
        for source in self.sources:
            for f in source.files() if isinstance(source, _Tree) else [source]:
                found[f.name] = f
        return [found[name] for name in sorted(found)]

    def materialize(self) -> tuple[ImageStep, bytes]:
        data = tar(self.files(), self.what)
        return ImageStep(kind="files", path=self.dest, digest=digest_of(data), copy=self.copy), data


@dataclass(frozen=True)
class BuildFunction:
    """A ``run_function`` step: the function pickled by value, run once in the image as it is so far."""

    fn: Callable[..., Any]
    secrets: tuple[str, ...]
    volumes: tuple[tuple[str, str], ...]
    is_layer = True

    def materialize(self) -> tuple[ImageStep, bytes]:
        ship_module_by_value(self.fn)
        try:
            data = pickling.dumps(self.fn)
        except Exception as exc:
            raise InvalidError(f"run_function({self.fn.__qualname__}) cannot be pickled to ship it: {exc}") from exc
        return ImageStep(kind="function", digest=digest_of(data), secrets=list(self.secrets),
                         volumes=dict(self.volumes)), data


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar(files: list[_File], what: str) -> bytes:
    """The deterministic tar of ``files`` (already sorted by name); refused over ``BLOB_MAX_BYTES``."""
    total = sum(f.local.stat().st_size for f in files)
    if total > BLOB_MAX_BYTES:
        raise InvalidError(f"{what}: {len(files)} files, {total} bytes, more than the {BLOB_MAX_BYTES} an image "
                           "step may carry; leave some out with ignore=, or put large files in a rc.Volume")
    import tarfile  # here: only an image with local files needs it (2-3 ms of every client's start otherwise)

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for f in files:
            data = f.local.read_bytes()
            info = tarfile.TarInfo(f.name)
            info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0, 0, "", ""
            info.mode = 0o755 if os.stat(f.local).st_mode & 0o111 else 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _existing(local_path: str | Path, what: str) -> Path:
    path = Path(local_path).expanduser()
    if not path.exists():
        raise InvalidError(f"{what}: {str(local_path)!r} does not exist (looked for {path.absolute()})")
    return path.absolute()


def _absolute(remote_path: str | Path, what: str) -> str:
    text = str(remote_path)
    if not posixpath.isabs(text):
        raise InvalidError(f"{what}: remote_path {text!r} must be an absolute path in the container, e.g. '/data'")
    return text


def local_file(local_path: str | Path, remote_path: str, copy: bool) -> LocalFiles:
    what = f"add_local_file({str(local_path)!r}, {remote_path!r})"
    path = _existing(local_path, what)
    if not path.is_file():
        raise InvalidError(f"{what}: {str(local_path)!r} is not a file; use add_local_dir for a folder")
    remote = _absolute(remote_path, what)
    if remote.endswith("/"):  # a folder: the file keeps its name, as Modal does
        remote += path.name
    dest, name = posixpath.split(posixpath.normpath(remote))
    return LocalFiles(dest, copy, (_File(path, name),), what)


def local_dir(local_path: str | Path, remote_path: str, copy: bool, ignore: Ignore) -> LocalFiles:
    what = f"add_local_dir({str(local_path)!r}, {remote_path!r})"
    path = _existing(local_path, what)
    if not path.is_dir():
        raise InvalidError(f"{what}: {str(local_path)!r} is not a folder; use add_local_file for a file")
    return LocalFiles(posixpath.normpath(_absolute(remote_path, what)), copy, (_Tree(path, "", ignore),), what)


def _hidden(rel: Path) -> bool:
    """Never part of a module's source: bytecode, and dot-prefixed files or folders inside it."""
    return rel.suffix == ".pyc" or any(p == "__pycache__" or p.startswith(".") for p in rel.parts)


def python_source(modules: tuple[str, ...], copy: bool, ignore: Ignore) -> LocalFiles:
    what = f"add_local_python_source({', '.join(map(repr, modules))})"
    sources: list[_File | _Tree] = []
    for module in modules:
        sources.extend(_module_sources(module, what, lambda rel: _hidden(rel) or ignore(rel)))
    return LocalFiles(PYTHON_SOURCE_ROOT, copy, tuple(sources), what)


def _module_sources(module: str, what: str, ignore: Ignore) -> list[_File | _Tree]:
    """Where ``module`` is on this machine: its package folders, or its one file."""
    if not isinstance(module, str) or not re.fullmatch(r"\w+(\.\w+)*", module):
        raise InvalidError(f"{what}: {module!r} is not a module name (such as 'mypkg' or 'mypkg.sub')")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise InvalidError(f"{what}: module {module!r} was not found here: {exc}") from None
    if spec is None:
        raise InvalidError(f"{what}: module {module!r} was not found here (is it on sys.path? "
                           "run from the folder that holds it)")
    parts = module.split(".")
    if spec.submodule_search_locations:
        folders = [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]
        return [_Tree(folder, "/".join(parts), ignore) for folder in folders]
    origin = Path(spec.origin) if spec.origin and spec.has_location else None
    if origin is None or origin.suffix != ".py" or not origin.is_file():
        raise InvalidError(f"{what}: module {module!r} has no Python source file here ({spec.origin}); "
                           "only modules and packages of .py files can be added")
    return [_File(origin, "/".join([*parts[:-1], origin.name]))]


_INDEX_FLAGS = {"-i": "index_url", "--index-url": "index_url", "--extra-index-url": "extra_index_url",
                "-f": "find_links", "--find-links": "find_links"}


@dataclass
class Requirements:
    """What a requirements file says: its specifiers, and the index settings it gives."""

    packages: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # index_url, extra_index_url, find_links, pre

    def read(self, path: Path, seen: tuple[Path, ...] = ()) -> Requirements:
        """Add the specifiers of ``path`` (``-r`` files included, relative to it)."""
        for number, line in _logical_lines(path):
            where = f"{path}, line {number}"
            if not line.startswith("-"):
                self.packages.append(line)
                continue
            flag, value = _option(line)
            if flag in ("-r", "--requirement"):
                self._include(path.parent / value, where, (*seen, path))
            elif flag == "--pre":
                self.options["pre"] = True
            elif flag in _INDEX_FLAGS and value:
                self.options.setdefault(_INDEX_FLAGS[flag], value)
            else:
                raise InvalidError(f"{where}: {line!r} is not supported here; the file may hold requirement "
                                   "specifiers, -r FILE, --index-url, --extra-index-url, --find-links and --pre "
                                   "(give other installer flags as extra_options=)")
        return self

    def _include(self, path: Path, where: str, seen: tuple[Path, ...]) -> None:
        if not path.is_file():
            raise InvalidError(f"{where}: the included file {str(path)!r} does not exist")
        if path.resolve() in {p.resolve() for p in seen}:
            raise InvalidError(f"{where}: {str(path)!r} includes itself")
        self.read(path, seen)


def _option(line: str) -> tuple[str, str]:
    """``--index-url=X``, ``--index-url X``, ``-iX`` or ``-i X`` as its flag and value."""
    match = re.match(r"(--[\w-]+|-\w)[=\s]*(.*)", line)
    return (match.group(1), match.group(2).strip()) if match else (line, "")


def _logical_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Each requirement line without comments, continuation lines joined, with its first line's number."""
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        text = text.lstrip() if pending else text
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        line, pending = (pending + text).strip(), ""
        if line:
            yield start, line
    if pending.strip():
        yield start, pending.strip()


def read_requirements(requirements_txt: str | Path, what: str) -> Requirements:
    path = _existing(requirements_txt, what)
    if not path.is_file():
        raise InvalidError(f"{what}: {str(requirements_txt)!r} is not a file")
    return Requirements().read(path)


def read_pyproject(pyproject_toml: str | Path, optional_dependencies: list[str], what: str) -> list[str]:
    """``[project.dependencies]``, then those of each named ``[project.optional-dependencies]`` group."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise InvalidError(f"{what} needs Python 3.11 or later here (tomllib) to read the file") from None
    path = _existing(pyproject_toml, what)
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidError(f"{what}: {str(pyproject_toml)!r} is not valid TOML: {exc}") from None
    if "dependencies" not in project:
        raise InvalidError(f"{what}: no [project] dependencies in {str(pyproject_toml)!r}; a pyproject.toml that "
                           "declares [tool.poetry.dependencies] instead is not read here (see "
                           "https://packaging.python.org/en/latest/guides/writing-pyproject-toml)")
    packages = list(project["dependencies"])
    groups = project.get("optional-dependencies", {})
    for group in optional_dependencies:
        if group not in groups:
            raise InvalidError(f"{what}: no optional dependency group {group!r} in {str(pyproject_toml)!r}; "
                               f"it has {sorted(groups) or 'none'}")
        packages.extend(groups[group])
    return packages
