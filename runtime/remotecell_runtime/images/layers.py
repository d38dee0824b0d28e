"""The layer cache: ``STATE/images/layers/<key>``, one folder per built layer, and the unpacked files of mounts.

A layer is what an image is after one step (``ImageSpec.layer_keys``).  Its
folder holds what that step made: a venv (``venv/``, for the base and each
install step), the files of a ``files`` step with ``copy=True`` (``files/``), a root
filesystem (``rootfs/``, for a system step or a registry base), or nothing (``env``,
``workdir``), and ``layer.json``: the ``Layer``, everything a
container of an image ending there needs (which layer's venv it runs, the
variables, the working directory, the files and where they go).  Folders are
named by keys relative to the cache, so the JSON holds no path of the state
folder but the base interpreter's.

Invariants: a layer folder exists only once it is whole: it is made in
``STATE/images/staging`` and renamed into place with its ``layer.json`` inside
(``commit``), and a staging folder is removed when its build fails or, after a
crash, when the next runtime starts (``sweep``); a layer is never written again
once committed (a later step copies its venv: hard links to the same files, and
uv installs by linking new files, never by writing into one it finds); the same
holds for ``STATE/images/mounts/<digest>``, the unpacked tar of a ``files`` step
with ``copy=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..backends.base import ContainerImage
from .steps import PYTHON_SOURCE_ROOT

LAYER_FILE = "layer.json"
VENV = "venv"
FILES = "files"
ROOTFS = "rootfs"


@dataclass(frozen=True)
class Layer:
    """What a container of an image ending at this layer needs (cumulative over the layers below it)."""

    key: str
    venv: str  # the key of the layer whose folder holds the venv this one runs
    base_prefix: str  # the venv's base interpreter's prefix (bound read-only in a sandbox)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (folder relative to the layers, container path), in order
    rootfs: str | None = None  # the key of the layer whose folder holds its root filesystem (None: the host's)

    def after(self, key: str, **changes: object) -> Layer:
        """The layer made by one more step on top of this one."""
        return replace(self, key=key, **changes)  # type: ignore[arg-type]


class LayerStore:
    """Finds, stages, commits and sweeps layers and unpacked mounts under ``root`` (``STATE/images``);
    ``code``: the runtime's own code that every image's containers read."""

    def __init__(self, root: Path, code: Path) -> None:
        self.code = code
        self.layers = root / "layers"
        self.mounts = root / "mounts"
        self.systems = root / "systems"
        self.staging_root = root / "staging"
        self._known: dict[str, Layer] = {}

    def sweep(self) -> None:
        """Remove what builds of an earlier run left half-made (none runs at start)."""
        shutil.rmtree(self.staging_root, ignore_errors=True)

    def get(self, key: str) -> Layer | None:
        """The committed layer ``key``, or None."""
        layer = self._known.get(key)
        if layer is None:
            try:
                raw = json.loads((self.layers / key / LAYER_FILE).read_text())
            except (OSError, ValueError):
                return None
            layer = self._known[key] = Layer(**{**raw, "files": tuple(tuple(f) for f in raw["files"])})
        return layer

    def forget(self, key: str) -> None:
        """Layer ``key`` was removed (``usage.Usage.prune``)."""
        self._known.pop(key, None)

    def folder(self, key: str) -> Path:
        return self.layers / key

    def venv(self, layer: Layer) -> Path:
        return self.layers / layer.venv / VENV

    def rootfs(self, layer: Layer) -> Path | None:
        """The root filesystem of ``layer``'s image (None: it runs on the host's system)."""
        return self.layers / layer.rootfs / ROOTFS if layer.rootfs else None

    def system(self, key: str) -> Path | None:
        """The base system ``key`` (a root filesystem), if it is there."""
        folder = self.systems / key / ROOTFS
        return folder if folder.is_dir() else None

    def commit_system(self, staging: Path, key: str) -> Path:
        """Put the base system made in ``staging`` (its ``rootfs``) in place as ``key``."""
        self._into_place(staging, self.systems / key)
        return self.systems / key / ROOTFS

    def stage(self, key: str) -> Path:
        """A new, empty staging folder for layer ``key`` (or a mount)."""
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=self.staging_root))

    def commit(self, staging: Path, layer: Layer) -> Layer:
        """Put ``staging`` in place as ``layer``; one that another build committed first wins."""
        (staging / LAYER_FILE).write_text(json.dumps(asdict(layer)))
        if not self._into_place(staging, self.layers / layer.key):
            return self.get(layer.key) or layer
        self._known[layer.key] = layer
        return layer

    def mount(self, digest: str) -> Path | None:
        """The unpacked files of blob ``digest``, if they are there."""
        folder = self.mounts / digest
        return folder if folder.is_dir() else None

    def unpack(self, tar_path: Path, digest: str) -> Path:
        """Unpack blob ``digest`` (a tar) once, for mounts; ``tarfile.TarError`` or ``OSError`` if it cannot be."""
        staging = self.stage(digest)
        try:
            unpack(tar_path, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._into_place(staging, self.mounts / digest)
        return self.mounts / digest

    def image(self, layer: Layer, mounts: list[tuple[Path, str]], sandboxed: bool) -> ContainerImage:
        """What a container of ``layer`` with ``mounts`` (folder, container path) runs in.

        Without a sandbox no file can be put at a container path: the files meant for the import
        root (``/root``) are put on the import path where they are instead."""
        venv = self.venv(layer)
        every = [*((self.layers / folder, dest) for folder, dest in layer.files), *mounts]
        rootfs = self.rootfs(layer)
        home = rootfs / PYTHON_SOURCE_ROOT.lstrip("/") if rootfs else None
        if home is not None and home.is_dir() and any(home.iterdir()):  # what its build left in the home
            every.insert(0, (home, PYTHON_SOURCE_ROOT))
        files = tuple((str(folder), dest) for folder, dest in every)
        pythonpath = (PYTHON_SOURCE_ROOT,) if sandboxed else tuple(f for f, dest in files if dest == PYTHON_SOURCE_ROOT)
        # a system interpreter (under /usr) is the image system's own: its base system holds its packages
        roots = [str(venv), *([] if rootfs and _inside(layer.base_prefix, "/usr") else [layer.base_prefix]),
                 str(self.code)]
        return ContainerImage(python=str(venv / "bin" / "python"), roots=tuple(roots),
                              env=layer.env, workdir=layer.workdir, files=files if sandboxed else (),
                              pythonpath=pythonpath, rootfs=str(rootfs) if rootfs else None)

    @staticmethod
    def _into_place(staging: Path, target: Path) -> bool:
        """Rename ``staging`` to ``target``; False (``staging`` removed) when ``target`` is there already."""
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
            return False
        return True


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def unpack(tar_path: Path, into: Path) -> None:
    """A ``files`` step's tar into ``into``: regular files and folders only, no name outside it."""
    with tarfile.open(tar_path) as archive:
        archive.extractall(into, filter="data")


def copy_venv(source: Path, target: Path) -> None:
    """A venv copied as hard links (a copy costs no space and no time per byte; links stay links)."""
    shutil.copytree(source, target, symlinks=True, copy_function=os.link)
