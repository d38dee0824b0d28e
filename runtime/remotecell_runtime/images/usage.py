"""Which images were used when, and removing the layers of those not used for a while (``remotecell image``).

Each time an image is found ready for a container, ``Usage.touch`` records it in
``STATE/images/used/<image key>.json`` (its layer keys, its mounts, a one-line
description; the file's mtime is its last use, rewritten at most every
``TOUCH_EVERY_S``).  ``Usage.prune`` keeps every layer of an image that is live
(a registered function's or a running sandbox's, or being built) or was used since
the cutoff, and every layer or mount folder made since the cutoff; it removes the
rest, each folder first renamed into the staging folder (which the next runtime
sweeps) so no reader ever sees half of one.

Invariants: a kept image keeps its whole chain of layers (a layer's venv, root
filesystem and files live in its own folder or an ancestor's, and the chain holds
every ancestor); base systems, pulled registry blobs and uv's cache are not
touched (they are shared, and costly to make again).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol.image_spec import ImageSpec
from .layers import LayerStore
from .steps import describe, describe_base

TOUCH_EVERY_S = 3600.0


@dataclass
class PruneReport:
    """What a prune removed (or, dry, would remove)."""

    images: list[str] = field(default_factory=list)  # keys of the image records removed
    layers: list[str] = field(default_factory=list)  # layer folders removed
    mounts: list[str] = field(default_factory=list)  # unpacked mount folders removed
    freed_bytes: int = 0  # files that had no other link (a file shared with uv's cache frees nothing)
    kept_images: int = 0


class Usage:
    """The image records under ``STATE/images/used`` of one runtime's layer cache."""

    def __init__(self, root: Path, store: LayerStore) -> None:
        self.folder = root / "used"
        self.store = store
        self._touched: dict[str, float] = {}  # image key -> monotonic time its record was last written

    def touch(self, key: str, spec: ImageSpec, salt: str) -> None:
        """Record a use of image ``key`` now (its file rewritten at most every ``TOUCH_EVERY_S``)."""
        now = time.monotonic()
        if key in self._touched and now - self._touched[key] < TOUCH_EVERY_S:
            return
        self._touched[key] = now
        record = {"layers": spec.layer_keys(salt), "mounts": [str(m.digest) for m in spec.mounts],
                  "description": " | ".join([describe_base(spec), *(describe(s) for s in spec.steps)])}
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.json"
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        part.write_text(json.dumps(record))
        os.replace(part, path)

    def records(self) -> dict[str, tuple[dict[str, object], float]]:
        """Image key -> (its record, its last use as epoch seconds); unreadable records skipped."""
        found: dict[str, tuple[dict[str, object], float]] = {}
        for path in self.folder.glob("*.json") if self.folder.is_dir() else ():
            try:
                found[path.stem] = (json.loads(path.read_text()), path.stat().st_mtime)
            except (OSError, ValueError):
                continue
        return found

    def prune(self, cutoff: float, live: dict[str, tuple[list[str], list[str]]], dry_run: bool) -> PruneReport:
        """Remove what is neither live (image key -> its layers and mounts) nor used or made since ``cutoff``
        (epoch seconds)."""
        report = PruneReport()
        keep_layers = {k for layers, _ in live.values() for k in layers}
        keep_mounts = {m for _, mounts in live.values() for m in mounts}
        for key, (record, used) in self.records().items():
            if key in live or used >= cutoff:
                keep_layers.update(_strings(record.get("layers")))
                keep_mounts.update(_strings(record.get("mounts")))
                report.kept_images += 1
            else:
                report.images.append(key)
        report.layers = _stale(self.store.layers, keep_layers, cutoff)
        report.mounts = _stale(self.store.mounts, keep_mounts, cutoff)
        if dry_run:
            report.freed_bytes = sum(_unshared_bytes(self.store.layers / k) for k in report.layers) + sum(
                _unshared_bytes(self.store.mounts / m) for m in report.mounts)
            return report
        for key in report.images:
            (self.folder / f"{key}.json").unlink(missing_ok=True)
            self._touched.pop(key, None)
        for name in report.layers:
            report.freed_bytes += self._remove(self.store.layers / name)
            self.store.forget(name)
        for name in report.mounts:
            report.freed_bytes += self._remove(self.store.mounts / name)
        return report

    def _remove(self, folder: Path) -> int:
        """``folder`` moved out of sight at once, then removed; the bytes that freed."""
        freed = _unshared_bytes(folder)
        self.store.staging_root.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix="pruned-", dir=self.store.staging_root))
        try:
            os.rename(folder, trash / folder.name)
        except OSError:
            return 0
        shutil.rmtree(trash, ignore_errors=True)
        return freed


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _stale(folder: Path, keep: set[str], cutoff: float) -> list[str]:
    """The folders in ``folder`` neither kept nor made since ``cutoff``."""
    if not folder.is_dir():
        return []
    out = []
    for entry in folder.iterdir():
        try:
            made = entry.stat().st_mtime
        except OSError:
            continue
        if entry.name not in keep and made < cutoff:
            out.append(entry.name)
    return sorted(out)


def _unshared_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` that have no other link."""
    total = 0
    for path, _, names in os.walk(folder):
        for name in names:
            try:
                info = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            if info.st_nlink == 1:
                total += info.st_size
    return total
