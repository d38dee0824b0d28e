"""Definitions that travel by reference (``ByReference``): found by importing their module in the container.

The app's own modules arrive as a tar (``ByReference.source``), unpacked once per version into
``<tmp>/remotecell-source-<digest>`` and put first on the import path; importing the module then
runs its module-level code once in this container, as Modal's containers do.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import sys
from typing import Any

from ..protocol.spec import ByReference, ClsSpec


def resolve(target: Any) -> Any:
    """The function, or the ClsSpec with its class, that ``target`` names; anything else as it is."""
    if isinstance(target, ByReference):
        return find(target)
    if isinstance(target, ClsSpec) and isinstance(target.cls, ByReference):
        return dataclasses.replace(target, cls=find(target.cls))
    return target


def find(ref: ByReference) -> Any:
    if ref.source is not None:
        folder = unpack(ref.source, ref.digest)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module = importlib.import_module(ref.module)
    try:
        found = getattr(module, ref.attribute)
    except AttributeError:
        raise ImportError(f"module {ref.module!r} ({module.__file__}) has no {ref.attribute!r}: the container's "
                          "copy of the app's source does not define it") from None
    return found.__wrapped__ if ref.unwrap else found


def unpack(source: bytes, digest: str) -> str:
    """The source's folder: unpacked beside, then renamed into place, so containers starting together agree."""
    import tarfile  # only for code by reference: tarfile, tempfile and compression modules slow every start
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"remotecell-source-{digest}")
    if os.path.isdir(folder):
        return folder
    staging = tempfile.mkdtemp(prefix=f"remotecell-source-{digest}-")
    with tarfile.open(fileobj=io.BytesIO(source)) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(staging, filter="data")
        else:  # before 3.11.4: our own client's tar of .py files (names checked anyway)
            for member in archive.getmembers():
                if member.name.startswith("/") or ".." in member.name.split("/") or not member.isfile():
                    raise ValueError(f"the app's source has an unexpected entry {member.name!r}")
            archive.extractall(staging)
    try:
        os.rename(staging, folder)
    except OSError:  # another container put the same version in place first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return folder
