"""What every image holds of the runtime itself: its pyzmq and cloudpickle, and its own code.

A container speaks the runtime's protocol and unpickles what the runtime's
clients pickled, so each image venv has pyzmq and cloudpickle at exactly the
runtime's versions (``pins``, installed into the base layer and given to every
later install as constraints: a step asking for another version fails the build
in uv's resolver, which names both).  They are installed from wheels repacked
here from the runtime's own installation (``STATE/images/wheels``, on uv's
``--find-links``), so no index needs to have those versions; an image of another
Python gets its pyzmq from the index.  The container code itself is not
installed: the base layer's ``remotecell.pth`` names ``STATE/images/code``, a
folder holding only links to the ``remotecell_runtime`` and ``remotecell``
packages this runtime runs, so an image sees that code and none of the host's
other packages.

Invariant: ``salt`` changes whenever what this module puts in an image could
(the runtime's version, the builder's layout, the pins, the runtime's Python),
so a new runtime builds its images anew instead of running old layers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocol.versions import VERSION

if TYPE_CHECKING:
    import importlib.metadata

LAYOUT = 1  # the builder's own version: what a layer holds and how (bump it when that changes)
PINNED = ("pyzmq", "cloudpickle")
CODE_PACKAGES = ("remotecell_runtime", "remotecell")
PTH_NAME = "remotecell.pth"
_NOT_PACKED = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")  # made by an install, not by a wheel


@dataclass(frozen=True)
class RuntimeCode:
    """The runtime's part of every image, ready under ``root`` (``STATE/images``)."""

    pins: tuple[str, ...]  # "pyzmq==27.3.0", ...
    wheels: Path  # the pinned packages as wheels (for --find-links)
    constraints: Path  # the pins as a constraints file
    code: Path  # links to the runtime's own packages (named by each image's .pth)

    @property
    def pth(self) -> str:
        """The line of the .pth file in every base layer."""
        return f"{self.code}\n"


def pins() -> list[str]:
    """The runtime's own versions of what every image holds."""
    import importlib.metadata  # ~8 ms: only when an image is built, not at every runtime start

    return [f"{name}=={importlib.metadata.version(name)}" for name in PINNED]


def salt() -> str:
    """What the layer keys mix in: everything here that could change what an image holds."""
    v = sys.version_info
    return json.dumps([LAYOUT, VERSION, f"{v.major}.{v.minor}.{v.micro}", pins()])


def prepare(root: Path) -> RuntimeCode:
    """Make the wheels, the constraints file and the code folder under ``root`` (each once; links anew)."""
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for name in PINNED:
        _repack(_distribution(name), wheels)
    constraints = root / "pins.txt"
    pinned = pins()
    _write_if_changed(constraints, "".join(f"{p}\n" for p in pinned))
    return RuntimeCode(tuple(pinned), wheels, constraints, _link_code(code_folder(root)))


def code_folder(root: Path) -> Path:
    """Where the links to the runtime's own packages are, under ``root`` (``STATE/images``)."""
    return root / "code"


def _link_code(folder: Path) -> Path:
    """``folder`` holding a link to each of the runtime's packages (made again each start: they may move)."""
    folder.mkdir(parents=True, exist_ok=True)
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)  # finds it without importing it (the runtime imports no client)
        locations = list(spec.submodule_search_locations or []) if spec else []
        link = folder / package
        staging = folder / f".{package}.new"
        if staging.is_symlink():
            staging.unlink()
        if not locations:
            continue
        os.symlink(os.path.realpath(locations[0]), staging)
        os.replace(staging, link)
    return folder


def _distribution(name: str) -> importlib.metadata.Distribution:
    import importlib.metadata

    return importlib.metadata.distribution(name)


def _repack(dist: importlib.metadata.Distribution, wheels: Path) -> Path:
    """The installed ``dist`` as a wheel in ``wheels`` (made once: its name holds its version and tags)."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")] or ["py3-none-any"]
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    name = dist.metadata["Name"].replace("-", "_")
    target = wheels / f"{name}-{dist.version}-{'-'.join('.'.join(p) for p in parts)}.whl"
    if target.exists():
        return target
    staging = target.with_suffix(".part")
    record_name, records = None, []
    with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files or []:
            if file.name == "RECORD":
                record_name = str(file)
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.name in _NOT_PACKED:
                continue  # scripts outside site-packages, bytecode, and what the install wrote
            data = Path(str(file.locate())).read_bytes()
            wheel.writestr(str(file), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{file},sha256={digest},{len(data)}")
        record_name = record_name or f"{name}-{dist.version}.dist-info/RECORD"
        wheel.writestr(record_name, "\n".join([*records, f"{record_name},,"]) + "\n")
    os.replace(staging, target)
    return target


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        staging = path.with_suffix(".part")
        staging.write_text(text)
        os.replace(staging, path)
