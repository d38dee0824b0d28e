"""Images: Python packages for a function's containers, installed once on the runtime host and cached.

An image is its list of package specifiers. It is built with ``pip install
--target STATE/images/<key>`` (the key hashes the list and the Python version),
in the background, and its containers get that folder first on ``PYTHONPATH``,
so they run the runtime's own interpreter with the image's packages over its
own. A built image stays cached across restarts; a failed build is reported to
the inputs that wait for it, and tried again when a function asks for that
image after ``RETRY_FAILED_S``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .protocol.options import ImageSpec

log = logging.getLogger("remotecell.runtime")

BUILD_TIMEOUT_S = 1800.0
RETRY_FAILED_S = 60.0
OUTPUT_TAIL_LINES = 20
READY_MARK = ".remotecell-ready"


class ImageError(ValueError):
    """An image spec the runtime refuses: the message says what is wrong."""


def packages_of(spec: ImageSpec) -> list[str]:
    """The package specifiers of an ``image`` option, checked (the client checks them too)."""
    packages = []
    for step in spec.steps:
        if step.kind not in ("pip", "uv_pip"):
            raise ImageError(f"image step {step.kind!r} is not supported by this runtime yet")
        packages.extend(step.packages)
    for package in packages:
        if not package.strip() or package.lstrip().startswith("-") or "\n" in package:
            raise ImageError(f"image package {package!r} is not a requirement specifier (no pip options)")
    return sorted(set(packages))


@dataclass
class Build:
    key: str
    packages: list[str]
    started: float = field(default_factory=time.monotonic)
    error: str | None = None
    done: bool = False
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL_LINES))


class Images:
    """Builds and finds images under ``STATE/images``; ``on_built`` runs after each build ends."""

    def __init__(self, state_dir: Path, on_built: Callable[[], None]) -> None:
        self.root = state_dir / "images"
        self.on_built = on_built
        self.builds: dict[str, Build] = {}

    def key(self, packages: list[str]) -> str:
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        return hashlib.sha256(json.dumps([python, packages]).encode()).hexdigest()[:16]

    def site(self, spec: ImageSpec) -> str | Build:
        """The image's folder when it is built; else its build (started now if needed), which may have failed."""
        packages = packages_of(spec)
        key = self.key(packages)
        folder = self.root / key
        if (folder / READY_MARK).exists():
            return str(folder)
        build = self.builds.get(key)
        if build is None or (build.error and time.monotonic() - build.started > RETRY_FAILED_S):
            build = self.builds[key] = Build(key, packages)
            asyncio.ensure_future(self._build(build, folder))
        return build

    async def _build(self, build: Build, folder: Path) -> None:
        log.info("building image %s: pip install %s", build.key, " ".join(build.packages))
        staging = self.root / f"{build.key}.building"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        try:
            returncode = await asyncio.wait_for(self._pip(build, staging), BUILD_TIMEOUT_S)
            if returncode != 0:
                build.error = f"pip install {' '.join(build.packages)} failed (exit {returncode}):\n" + "\n".join(
                    build.tail)
            else:
                (staging / READY_MARK).write_text(json.dumps(build.packages))
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
        except asyncio.TimeoutError:
            build.error = f"pip install {' '.join(build.packages)} took more than {BUILD_TIMEOUT_S:g} s"
        except OSError as exc:
            build.error = f"could not build the image in {staging}: {exc}"
        build.done = True
        if build.error:
            log.warning("image %s failed: %s", build.key, build.error)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            log.info("image %s built in %.1f s", build.key, time.monotonic() - build.started)
        self.on_built()

    async def _pip(self, build: Build, staging: Path) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--quiet",
            "--target", str(staging), *build.packages,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                build.tail.append(raw.decode(errors="replace").rstrip())
            return await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            raise
