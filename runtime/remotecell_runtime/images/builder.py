"""Images: each one its own environment, built once, layer by layer, from cached layers where it can be.

An image's layers are keyed by ``ImageSpec.layer_keys(salt)``: the base is a venv
made with ``uv venv`` (the asked Python) holding the runtime's pins and a ``.pth``
naming its code (``runtime_code``); each ``pip``/``uv_pip`` step is a hard-link copy
of the venv below it with that step installed (``uv pip install``, the step's own
index options); ``env``, ``workdir`` and ``files`` (``copy=True``) steps record
their change, the last one unpacking its files.  A build starts from the deepest
layer already cached, so an unchanged image builds nothing and images that start
alike share those layers; the files of ``copy=False`` steps are unpacked once per
blob and put in place when a container starts.  ``apt``, ``run`` and ``function``
steps make a root filesystem layer (``system``: run as root over an overlay of the
layer below, or of a base system of the host's Debian release made once), and a
registry base pulls its root filesystem (``oci``) before its venv; from then on the
image's containers run with that root filesystem as ``/``.

A build's output goes to its ``listeners`` as it comes (the client that asked, see
``services/images.py``) and its last lines into the error when a step fails, which
names the step; the runtime's own log says each build and how it ended.

Invariants: one build per image at a time (a second asker joins it) and one per
layer (two images sharing a layer being built wait for one build of it); nothing
is cached unless whole (``layers``: staging folders, removed when a step fails);
a failed build is remembered for ``RETRY_FAILED_S`` for the pools that wait for it
(they fail at once), and a client's new request builds it again.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..backends.base import ContainerImage
from ..protocol.image_spec import ImageSpec, ImageStep
from . import runtime_code, system
from .build import Build
from .layers import FILES, ROOTFS, VENV, Layer, LayerStore, copy_venv, unpack
from .pipconf import read_pip_config
from .runtime_code import RuntimeCode
from .steps import SYSTEM_KINDS, BuildFailed, describe, describe_base
from .system_build import BASE_CHECK, Says, SystemBuilds, host_env
from .usage import PruneReport, Usage
from .uv import Uv, find_binary

__all__ = ["Build", "BuildFailed", "Images"]

log = logging.getLogger("remotecell.runtime")

BUILD_TIMEOUT_S = 1800.0
RETRY_FAILED_S = 60.0
TAIL_LINES = 20  # of a failed step's output, in its error
# The container code runs there; what the base interpreter is, for the log and the sandbox.


class Images:
    """Builds and finds images under ``STATE/images``; ``on_built`` runs after each build ends."""

    def __init__(self, state_dir: Path, blob: Callable[[str], Path], sandboxed: bool,
                 on_built: Callable[[], None]) -> None:
        self.root = state_dir / "images"
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob = blob
        self.sandboxed = sandboxed
        self.on_built = on_built
        self.store = LayerStore(self.root, runtime_code.code_folder(self.root))
        self.store.sweep()
        self.builds: dict[str, Build] = {}
        self._ready: dict[str, ContainerImage] = {}
        self._layer_locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._uv: Uv | None = None
        self.system = SystemBuilds(self.root, self.store, blob, self._run, self._layer_locks, sandboxed)
        self.usage = Usage(self.root, self.store)

    @functools.cached_property
    def salt(self) -> str:
        """What every layer key mixes in (``runtime_code.salt``); found on first use, not at the runtime's start
        (its package metadata costs ~18 ms, and most runtimes never build an image)."""
        return runtime_code.salt()

    def key(self, spec: ImageSpec) -> str:
        """The image's key: its last layer's, and the files put in place at start."""
        mounts = [(m.path, m.digest) for m in spec.mounts]
        body = json.dumps([spec.layer_keys(self.salt)[-1], mounts])
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def ready(self, spec: ImageSpec) -> ContainerImage | None:
        """The built image, when its layers and files are all cached (no build needed)."""
        key = self.key(spec)
        image = self._ready.get(key)
        if image is None:
            layer = self.store.get(spec.layer_keys(self.salt)[-1])
            mounts = [(self.store.mount(str(m.digest)), str(m.path)) for m in spec.mounts]
            if layer is None or any(folder is None for folder, _ in mounts):
                return None
            image = self._ready[key] = self.store.image(layer, [(f, p) for f, p in mounts if f], self.sandboxed)
        self.usage.touch(key, spec, self.salt)
        return image

    def prune(self, older_than_s: float, live: Iterable[ImageSpec], dry_run: bool = False) -> PruneReport:
        """Remove the layers of images not used for ``older_than_s`` and not in ``live`` (nor being built)."""
        building = [b.spec for b in self.builds.values() if b.ended is None]
        chains = {self.key(spec): (spec.layer_keys(self.salt), [str(m.digest) for m in spec.mounts])
                  for spec in [*live, *building]}
        report = self.usage.prune(time.time() - older_than_s, chains, dry_run)
        if not dry_run:
            self._ready.clear()  # found again from the layers that are left
        return report

    def start(self, spec: ImageSpec, *, again: bool = False) -> ContainerImage | Build:
        """The built image, or its build: the one running, a failed one (unless ``again`` or it failed over
        ``RETRY_FAILED_S`` ago), else one started now."""
        image = self.ready(spec)
        if image is not None:
            return image
        key = self.key(spec)
        build = self.builds.get(key)
        if build is not None and (build.ended is None or not (again or time.monotonic() - build.ended
                                                                  > RETRY_FAILED_S)):
            return build
        build = self.builds[key] = Build(key, spec)
        build.task = asyncio.ensure_future(self._run_build(build))
        return build

    def close(self) -> None:
        for build in self.builds.values():
            if build.task is not None and not build.task.done():
                build.task.cancel()

    async def _run_build(self, build: Build) -> ContainerImage:
        try:
            image = await asyncio.wait_for(self._build(build), BUILD_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise BuildFailed(f"the image took more than {BUILD_TIMEOUT_S:g} s to build ({build.doing})") from None
        except BuildFailed as exc:
            log.warning("image %s failed: %s", build.key[:12], exc)
            raise
        finally:
            build.ended = time.monotonic()
            asyncio.get_running_loop().call_soon(self.on_built)
        return image

    async def _build(self, build: Build) -> ContainerImage:
        spec = build.spec
        keys = spec.layer_keys(self.salt)
        steps: list[ImageStep | None] = [None, *(s for s in spec.steps if s.is_layer)]
        cached = next((i for i in range(len(keys), 0, -1) if self.store.get(keys[i - 1])), 0)
        layer = self.store.get(keys[cached - 1]) if cached else None
        if cached < len(keys):
            log.info("building image %s: %d of %d layers cached", build.key[:12], cached, len(keys))
            build.say(f"Building image {build.key[:12]} ({len(keys) - cached} layers to build, {cached} cached)")
        for number in range(cached, len(keys)):
            layer = await self._layer(build, keys[number], layer, steps[number], f"{number}/{len(keys) - 1}")
        assert layer is not None
        mounts = [(await self._mount(build, m), str(m.path)) for m in spec.mounts]
        image = self._ready[build.key] = self.store.image(layer, mounts, self.sandboxed)
        if cached < len(keys):
            build.say(f"Built image {build.key[:12]} in {time.monotonic() - build.started:.1f} s")
            log.info("image %s built in %.1f s", build.key[:12], time.monotonic() - build.started)
        return image

    async def _layer(self, build: Build, key: str, parent: Layer | None, step: ImageStep | None,
                     number: str) -> Layer:
        """Layer ``key``: ``step`` on ``parent`` (the base when ``step`` is None), built unless another
        build made it meanwhile."""
        what = describe(step) if step is not None else describe_base(build.spec)
        build.doing = f"step {number}: {what}"
        build.say(f"=> Step {number}: {what}")
        async with self._layer_locks[key]:
            done = self.store.get(key)
            if done is not None:
                build.say("   (built meanwhile by another image's build)")
                return done
            staging = self.store.stage(key)
            try:
                made = await self._make(build, key, parent, step, staging)
                return self.store.commit(staging, made)
            except (BuildFailed, OSError) as exc:
                raise BuildFailed(f"image step {number} ({what}) failed: {exc}") from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # committed: renamed away already

    async def _make(self, build: Build, key: str, parent: Layer | None, step: ImageStep | None,
                    staging: Path) -> Layer:
        if parent is None or step is None:
            return await self._base(build, key, staging)
        if step.kind == "env":
            return parent.after(key, env={**parent.env, **step.env})
        if step.kind == "workdir":
            return parent.after(key, workdir=step.path)
        if step.kind == "files":
            await self._unpack(step, staging / FILES)
            return parent.after(key, files=(*parent.files, (f"{key}/{FILES}", str(step.path))))
        if step.kind in SYSTEM_KINDS:
            return await self.system.step(build, key, parent, step, staging, await self._uv_ready())
        uv = await self._uv_ready()
        if parent.rootfs:
            return await self.system.install(build, key, parent, step, staging, uv)
        await asyncio.to_thread(copy_venv, self.store.venv(parent), staging / VENV)
        await self._run(uv.install(staging / VENV, list(step.packages), step), uv.environment(parent.env), build)
        return parent.after(key, venv=key)

    async def _base(self, build: Build, key: str, staging: Path) -> Layer:
        """A venv of the image's Python with the runtime's pins and code: the first layer of every image; for a
        registry image, its root filesystem too (pulled and unpacked), where that Python must run."""
        spec = build.spec
        registry = spec.base == "registry"
        config = (await self.system.pull(build, str(spec.registry_tag), staging / ROOTFS, spec.registry_secret)
                  if registry else None)
        uv = await self._uv_ready()
        venv = staging / VENV
        env = uv.environment({})
        try:
            await self._run(uv.venv(spec.add_python if config else spec.python_version, venv), env, build)
        except BuildFailed as exc:
            raise BuildFailed(f"{exc}\n{await self._pythons(uv)}") from None
        build.say(f"   packages from {uv.index.describe()}; the runtime's own: {', '.join(uv.code.pins)}")
        await self._run(uv.install(venv, list(uv.code.pins)), env, build)
        for site in venv.glob("lib/python*/site-packages"):
            (site / runtime_code.PTH_NAME).write_text(uv.code.pth)
            if config is not None:
                self.system.image_packages(build, staging / ROOTFS, site)
        check = [str(venv / "bin" / "python"), "-c", BASE_CHECK]
        if config is None:
            said = await self._run(check, env)
        else:
            base = Layer(key=key, venv=key, base_prefix=_prefix(venv))
            sandbox = self.system.sandbox(staging / ROOTFS, staging / "check", base, venv)
            try:
                said = await self._run(sandbox.argv(check, system.python_env(venv, config.env)), host_env(), None,
                                       name=f"the image's Python in {spec.registry_tag}")
            except BuildFailed as exc:
                raise BuildFailed(f"{exc}\n(the image's Python is the runtime host's, bound in: it needs a glibc "
                                  "system with the libraries it links; add_python='3.X' picks another one, which "
                                  "uv may fetch)") from None
            finally:
                shutil.rmtree(staging / "check", ignore_errors=True)
        version, _, prefix = (said[-1] if said else "").partition(" ")
        build.say(f"   Python {version} ({prefix}), the container code runs")
        if config is None:
            return Layer(key=key, venv=key, base_prefix=prefix)
        return Layer(key=key, venv=key, base_prefix=prefix, rootfs=key, env=config.env, workdir=config.workdir)

    async def _uv_ready(self) -> Uv:
        """uv with the host's index settings and the runtime's pins (made at the first build)."""
        if self._uv is None:
            code: RuntimeCode = await asyncio.to_thread(runtime_code.prepare, self.root)
            self._uv = Uv(find_binary(), self.root / "uv-cache", read_pip_config(), code)
        return self._uv

    async def _pythons(self, uv: Uv) -> str:
        """The interpreters uv finds here, for an image whose Python is not among them."""
        try:  # its warnings (about interpreters it could not run) go to stderr, the list to stdout
            proc = await asyncio.create_subprocess_exec(
                *uv.pythons(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=uv.environment({}), cwd=self.root)
            listed, _ = await proc.communicate()
            found = [f"{p['version']} ({p['path']})" for p in json.loads(listed)]
        except (OSError, ValueError, KeyError, TypeError):
            return "(uv could not list the Pythons it finds here)"
        return f"Pythons found here: {', '.join(found) or 'none'}"

    async def _unpack(self, step: ImageStep, into: Path) -> None:
        try:
            await asyncio.to_thread(unpack, self.blob(str(step.digest)), into)
        except (OSError, ValueError) as exc:  # tarfile's errors are ValueErrors or OSErrors
            raise BuildFailed(f"its files (blob {str(step.digest)[:12]}) could not be unpacked: {exc}") from None

    async def _mount(self, build: Build, step: ImageStep) -> Path:
        """The unpacked files of a ``copy=False`` step (unpacked once per blob)."""
        digest = str(step.digest)
        folder = self.store.mount(digest)
        if folder is not None:
            return folder
        build.doing = f"unpacking the files for {step.path}"
        try:
            return await asyncio.to_thread(self.store.unpack, self.blob(digest), digest)
        except (OSError, ValueError) as exc:
            raise BuildFailed(f"the files for {step.path} (blob {digest[:12]}) could not be unpacked: {exc}"
                              ) from None

    async def _run(self, argv: list[str], env: dict[str, str], build: Says | None = None,
                   name: str | None = None) -> list[str]:
        """Run one build command (``name``: how its failure names it; its program by default), its output said
        to ``build``'s listeners as it comes (none without ``build``); its lines, or ``BuildFailed`` with the
        last of them when it fails."""
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=self.root)
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if build is not None:
                    log.debug("[image %s] %s", build.key[:12], line)
                    build.say(line)
            code = await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            raise
        if code != 0:
            tail = "\n".join(lines[-TAIL_LINES:])
            raise BuildFailed(f"{name or Path(argv[0]).name} exited with {code}:\n{tail}{self._hint(tail)}")
        return lines

    def _hint(self, output: str) -> str:
        """Why uv refused a pinned package: every image holds the runtime's own."""
        pins = self._uv.code.pins if self._uv is not None else ()
        named = [p for p in pins if p.split("==")[0] in output]
        return (f"\n(the runtime's own {', '.join(named)} is in every image, at that version: a step cannot change "
                "it)") if named else ""


def _prefix(venv: Path) -> str:
    """The base interpreter's prefix of a venv made by uv (its ``home`` is the base's ``bin``)."""
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "home":
            return os.path.dirname(value.strip())
    return ""
