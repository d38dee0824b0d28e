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
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import vault
from ..backends.base import ContainerImage
from ..backends.sandbox import python_roots
from ..protocol.image_spec import IN_CONTAINER_ENV, ImageSpec, ImageStep
from . import oci, runtime_code, system
from .layers import FILES, ROOTFS, VENV, Layer, LayerStore, copy_venv, unpack
from .pipconf import read_pip_config
from .runtime_code import RuntimeCode
from .steps import SYSTEM_KINDS, describe, describe_base
from .uv import Uv, find_binary

log = logging.getLogger("remotecell.runtime")

BUILD_TIMEOUT_S = 1800.0
RETRY_FAILED_S = 60.0
TAIL_LINES = 20  # of a failed step's output, in its error
# The container code runs there; what the base interpreter is, for the log and the sandbox.
BASE_CHECK = ("import platform, sys, remotecell_runtime.container.main; "
              "print(platform.python_version(), sys.base_prefix)")
FUNCTION_BLOB = "/tmp/remotecell-build-function.pkl"  # where a run_function step's pickled function is bound


class BuildFailed(Exception):
    """A step that failed: the message names it and quotes its last output lines."""


@dataclass(eq=False)
class Build:
    """One image being built (or built, or failed): what it does now, its output, its outcome."""

    key: str
    spec: ImageSpec
    started: float = field(default_factory=time.monotonic)
    doing: str = "starting"
    listeners: list[Callable[[str], None]] = field(default_factory=list)
    task: asyncio.Task[ContainerImage] | None = None
    ended: float | None = None

    def progress(self) -> str:
        """What it does now and for how long it has been at it, as a pool's waiting reason says it."""
        return f"building its image: {self.doing} ({time.monotonic() - self.started:.0f} s)"

    def say(self, line: str) -> None:
        for listener in list(self.listeners):
            listener(line)

    @property
    def error(self) -> str | None:
        """Why it failed, once it has."""
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        exc = self.task.exception()
        return str(exc) if exc is not None else None


class Images:
    """Builds and finds images under ``STATE/images``; ``on_built`` runs after each build ends."""

    def __init__(self, state_dir: Path, blob: Callable[[str], Path], sandboxed: bool,
                 on_built: Callable[[], None]) -> None:
        self.root = state_dir / "images"
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob = blob
        self.sandboxed = sandboxed
        self.on_built = on_built
        self.salt = runtime_code.salt()
        self.store = LayerStore(self.root, runtime_code.code_folder(self.root))
        self.store.sweep()
        self.builds: dict[str, Build] = {}
        self._ready: dict[str, ContainerImage] = {}
        self._layer_locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._uv: Uv | None = None
        self._releases: dict[str, system.Release] = {}
        # a named volume's host folder (run_function(volumes=)), set by the services that own volumes
        self.volume_folder: Callable[[str], Path] | None = None

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
        return image

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
            return await self._system_step(build, key, parent, step, staging)
        uv = await self._uv_ready()
        await asyncio.to_thread(copy_venv, self.store.venv(parent), staging / VENV)
        await self._run(uv.install(staging / VENV, list(step.packages), step), uv.environment(parent.env), build)
        return parent.after(key, venv=key)

    async def _base(self, build: Build, key: str, staging: Path) -> Layer:
        """A venv of the image's Python with the runtime's pins and code: the first layer of every image; for a
        registry image, its root filesystem too (pulled and unpacked), where that Python must run."""
        spec = build.spec
        config = await self._pull(build, staging / ROOTFS) if spec.base == "registry" else None
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
                self._image_packages(build, staging / ROOTFS, site)
        check = [str(venv / "bin" / "python"), "-c", BASE_CHECK]
        if config is None:
            said = await self._run(check, env)
        else:
            base = Layer(key=key, venv=key, base_prefix=_prefix(venv))
            sandbox = self._step_sandbox(staging / ROOTFS, staging / "check", base, venv)
            try:
                said = await self._run(sandbox.argv(check, system.python_env(venv, config.env)), _host_env(), None,
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

    @staticmethod
    def _image_packages(build: Build, rootfs: Path, site: Path) -> None:
        """A registry image's own Python packages of the venv's minor version, on the venv's path after its own
        (so the runtime's pins win); packages of another version are said, not used."""
        version = site.parent.name  # "python3.11"
        found = oci.site_folders(rootfs)
        used = [folder for folder in found if f"/{version}/" in folder or folder == "/usr/lib/python3/dist-packages"
                and (rootfs / "usr" / "lib" / version).is_dir()]
        if used:
            (site / oci.IMAGE_SITE_PTH).write_text("".join(f"{folder}\n" for folder in used))
            build.say(f"   the image's own packages in {', '.join(used)} are importable (after the venv's)")
        elif found:
            build.say(f"   the image's packages in {', '.join(found)} are not used: they are not for {version}")

    async def _pull(self, build: Build, into: Path) -> oci.ImageConfig:
        tag = str(build.spec.registry_tag)
        build.say(f"   pulling {tag}")
        loop = asyncio.get_running_loop()

        def say(line: str) -> None:
            loop.call_soon_threadsafe(build.say, line)

        try:
            return await asyncio.to_thread(oci.pull, tag, into, self.root / "oci-blobs", say)
        except oci.PullFailed as exc:
            raise BuildFailed(str(exc)) from None

    async def _system_step(self, build: Build, key: str, parent: Layer, step: ImageStep, staging: Path) -> Layer:
        """An apt, run or function step: run as root over the parent's root filesystem (or a base system),
        its changes kept as this layer's root filesystem (``system``)."""
        lower = self.store.rootfs(parent) or await self._base_system(build, parent)
        venv = self.store.venv(parent)
        image_env = parent.env if parent.rootfs else {"PATH": system.BASE_PATH, **parent.env}
        env = system.python_env(venv, image_env)
        sandbox = self._step_sandbox(lower, staging, parent, venv)
        for name, command, extra in self._commands(step, venv):
            sandbox.binds += extra.binds
            await self._run(sandbox.argv(command, {**env, **extra.env}), _host_env(), build, name=name)
            del sandbox.binds[len(sandbox.binds) - len(extra.binds):]
        try:
            await self._run(sandbox.argv([str(venv / "bin" / "python"), "-c", BASE_CHECK],
                                         {**env, "PYTHONDONTWRITEBYTECODE": "1"}), _host_env(), None,
                            name="the image's Python after this step")
        except BuildFailed as exc:
            raise BuildFailed(f"the step left a system where the image's Python no longer runs: {exc}") from None
        await asyncio.to_thread(self._keep, sandbox, lower, staging / ROOTFS)
        return parent.after(key, rootfs=key, env=image_env)

    @staticmethod
    def _keep(sandbox: system.StepSandbox, lower: Path, rootfs: Path) -> None:
        """The step's changes applied to a hard-link copy of ``lower`` in ``rootfs``."""
        system.prune(sandbox.upper, lower, sandbox.mount_points())
        system.link_tree(lower, rootfs)
        system.apply_upper(sandbox.upper, rootfs)
        for folder in (sandbox.upper, sandbox.work, sandbox.merged):
            shutil.rmtree(folder, ignore_errors=True)

    def _step_sandbox(self, lower: Path, staging: Path, layer: Layer, venv: Path) -> system.StepSandbox:
        """A build command's sandbox over ``lower``: the image's venv and interpreter, the runtime's code."""
        reads = [str(venv), str(self.store.code), *python_roots(str(self.root.parent))]
        if not layer.base_prefix.startswith("/usr"):
            reads.append(layer.base_prefix)
        binds = [(path, path, False) for path in sorted(set(reads))]
        return system.StepSandbox(lower, staging / "upper", staging / "work", staging / "merged", binds)

    def _commands(self, step: ImageStep, venv: Path) -> list[tuple[str, list[str], _Extra]]:
        """The build commands of a system step: (how the log names it, its command line, its extras)."""
        none = _Extra()
        if step.kind == "run":
            return [(f"`{command}`", ["/bin/sh", "-c", command], none) for command in step.commands]
        if step.kind == "apt":
            apt = ["apt-get", "-q"] + ([] if os.geteuid() == 0 else ["-o", "APT::Sandbox::User=root"])
            return [("apt-get update", [*apt, "update"], none),
                    ("apt-get install", [*apt, "install", "-y", *step.packages], none),
                    ("apt-get clean", ["/bin/sh", "-c", "apt-get clean && rm -rf /var/lib/apt/lists/*"], none)]
        extra = _Extra(binds=[(str(self.blob(str(step.digest))), FUNCTION_BLOB, False)],
                       env={"PYTHONUNBUFFERED": "1", IN_CONTAINER_ENV: "1"})
        for name in step.secrets:
            try:
                extra.env.update(vault.load(self.root.parent, name))
            except vault.SecretError as exc:
                raise BuildFailed(f"its secret {name!r}: {exc}") from None
        for path, volume in sorted(step.volumes.items()):
            if self.volume_folder is None:
                raise BuildFailed("volumes are not available to image builds on this runtime")
            try:
                extra.binds.append((str(self.volume_folder(volume)), path, True))
            except Exception as exc:  # the volumes service's refusal: it says which volume and why
                raise BuildFailed(f"its volume {volume!r}: {exc}") from None
        command = [str(venv / "bin" / "python"), "-m", "remotecell_runtime.container.build_function", FUNCTION_BLOB]
        return [("the build function", command, extra)]

    async def _base_system(self, build: Build, parent: Layer) -> Path:
        """The base system for an image whose interpreter lives at ``parent.base_prefix`` (made once)."""
        release = self._releases.get(parent.base_prefix)
        if release is None:
            try:
                release = await asyncio.to_thread(system.base_release, [parent.base_prefix])
            except system.SystemUnavailable as exc:
                raise BuildFailed(str(exc)) from None
            self._releases[parent.base_prefix] = release
        key = release.key()
        async with self._layer_locks[f"system-{key}"]:
            found = self.store.system(key)
            if found is not None:
                return found
            build.say(f"   making a base system: Debian {release.codename} ({release.arch}, minbase) with "
                      f"{', '.join(release.packages)} (once: it is cached)")
            staging = self.store.stage(key)
            try:
                command = release.bootstrap(shutil.which("mmdebstrap") or "mmdebstrap", staging / ROOTFS)
                await self._run(command, _host_env(), build, name="mmdebstrap")
                await asyncio.to_thread(system.fix_links, staging / ROOTFS)
                return self.store.commit_system(staging, key)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

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

    async def _run(self, argv: list[str], env: dict[str, str], build: Build | None = None,
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


@dataclass
class _Extra:
    """What one build command adds to its step's sandbox: binds (host path, container path, writable), variables."""

    binds: list[tuple[str, str, bool]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _host_env() -> dict[str, str]:
    """What a step's sandbox command itself runs with (bwrap clears it for the step)."""
    return {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _prefix(venv: Path) -> str:
    """The base interpreter's prefix of a venv made by uv (its ``home`` is the base's ``bin``)."""
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "home":
            return os.path.dirname(value.strip())
    return ""
