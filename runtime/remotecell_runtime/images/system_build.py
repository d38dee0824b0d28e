"""The system steps of image builds, for ``Images``: ``apt``/``run``/``function`` layers (see ``system``) and a
registry base's root filesystem (see ``oci``).

Each step runs over the layer below it (its root filesystem, or the base system made
once for the image's interpreter), one sandboxed command after the other, then the
image's Python is checked there and the changes are kept as the layer's root
filesystem; a registry image is pulled into its base layer, and its own Python
packages put on the venv's path.

Invariants: as in ``builder``: nothing is cached unless whole (a base system is
staged and renamed into place, under a lock of its key: one build of it at a time);
a failure is a ``BuildFailed`` naming what failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import vault
from ..backends.sandbox import python_roots
from ..container import build_pip
from ..protocol.image_spec import IN_CONTAINER_ENV, ImageStep
from . import system

if TYPE_CHECKING:
    from . import oci
from .layers import ROOTFS, VENV, Layer, LayerStore
from .steps import BuildFailed
from .uv import Uv

BASE_CHECK = ("import platform, sys, remotecell_runtime.container.main; "
              "print(platform.python_version(), sys.base_prefix)")
FUNCTION_BLOB = "/tmp/remotecell-build-function.pkl"  # where a run_function step's pickled function is bound
BUILD_TOOLS = "/tmp/remotecell-build-tools"  # where a run or function step finds its pip (``build_pip_tools``)
BUILD_UV = "/tmp/remotecell-build-uv"  # and uv


class Says(Protocol):
    """A build, as far as its system steps go: its key and its log."""

    key: str

    def say(self, line: str) -> None: ...


class CommandRunner(Protocol):
    """``Images._run``: one build command, its output said to the build, ``BuildFailed`` naming it."""

    def __call__(self, argv: list[str], env: dict[str, str], build: Says | None = None,
                 name: str | None = None) -> Awaitable[list[str]]: ...


class SystemBuilds:
    """The system steps of one runtime's builds, under ``root`` (``STATE/images``)."""

    def __init__(self, root: Path, store: LayerStore, blob: Callable[[str], Path], run: CommandRunner,
                 locks: MutableMapping[str, asyncio.Lock], sandboxed: bool) -> None:
        self.root = root
        self.store = store
        self.blob = blob
        self.run = run
        self.locks = locks
        self.releases: dict[str, system.Release] = {}
        # a named volume's host folder (run_function(volumes=)), set by the services that own volumes
        self.volume_folder: Callable[[str], Path] | None = None
        self.sandboxed = sandboxed
        self._described: str | None = None

    def describe(self) -> str:
        """For the status: whether system steps are built here (looked at once)."""
        if self._described is None:
            self._described = system.describe_host(self.sandboxed)
        return self._described

    async def pull(self, build: Says, tag: str, into: Path, secret: str | None = None) -> oci.ImageConfig:
        """Image ``tag`` unpacked into ``into``, its layers said as they come; ``secret``: the runtime's secret
        with the registry's credentials."""
        from . import oci  # its HTTP client costs a runtime's start ~5 ms: only for registry bases

        credentials = self._credentials(secret) if secret else None
        build.say(f"   pulling {tag}" + (f" as {credentials.username!r} (secret {secret!r})" if credentials else ""))
        loop = asyncio.get_running_loop()

        def say(line: str) -> None:
            loop.call_soon_threadsafe(build.say, line)

        try:
            return await asyncio.to_thread(oci.pull, tag, into, self.root / "oci-blobs", say, credentials)
        except oci.PullFailed as exc:
            raise BuildFailed(str(exc)) from None

    def _credentials(self, secret: str) -> oci.Credentials:
        """A registry's user and password from the runtime's secret ``secret``: ``REGISTRY_USERNAME`` and
        ``REGISTRY_PASSWORD``, or a Google service account's ``SERVICE_ACCOUNT_JSON``."""
        from . import oci

        try:
            values = vault.load(self.root.parent, secret)
        except vault.SecretError as exc:
            raise BuildFailed(f"the registry secret {secret!r}: {exc}") from None
        if "REGISTRY_USERNAME" in values and "REGISTRY_PASSWORD" in values:
            return oci.Credentials(values["REGISTRY_USERNAME"], values["REGISTRY_PASSWORD"])
        if "SERVICE_ACCOUNT_JSON" in values:
            return oci.Credentials("_json_key", values["SERVICE_ACCOUNT_JSON"])
        raise BuildFailed(f"the registry secret {secret!r} has {', '.join(sorted(values)) or 'no keys'}: it needs "
                          "REGISTRY_USERNAME and REGISTRY_PASSWORD (or SERVICE_ACCOUNT_JSON for Google's registry)")


    @staticmethod
    def image_packages(build: Says, rootfs: Path, site: Path) -> None:
        """A registry image's own Python packages of the venv's minor version, on the venv's path after its own
        (so the runtime's pins win); packages of another version are said, not used."""
        from . import oci

        version = site.parent.name  # "python3.11"
        found = oci.site_folders(rootfs)
        used = [folder for folder in found if f"/{version}/" in folder or folder == "/usr/lib/python3/dist-packages"
                and (rootfs / "usr" / "lib" / version).is_dir()]
        if used:
            (site / oci.IMAGE_SITE_PTH).write_text("".join(f"{folder}\n" for folder in used))
            build.say(f"   the image's own packages in {', '.join(used)} are importable (after the venv's)")
        elif found:
            build.say(f"   the image's packages in {', '.join(found)} are not used: they are not for {version}")


    async def step(self, build: Says, key: str, parent: Layer, step: ImageStep, staging: Path, uv: Uv) -> Layer:
        """An apt, run or function step: run as root over the parent's root filesystem (or a base system),
        its changes kept as this layer's root filesystem (``system``); what a run or function step installed
        into the image's venv (its ``pip``) kept as this layer's venv."""
        lower = self.store.rootfs(parent) or await self._base_system(build, parent)
        venv = self.store.venv(parent)
        image_env = parent.env if parent.rootfs else {"PATH": system.BASE_PATH, **parent.env}
        env = system.python_env(venv, image_env)
        if step.kind != "apt":  # its pip first (``_pip``)
            env["PATH"] = f"{BUILD_TOOLS}/bin:{env['PATH']}"
            env["PYTHONPATH"] = os.pathsep.join([f"{BUILD_TOOLS}/py", *filter(None, [env.get("PYTHONPATH")])])
        sandbox = self.sandbox(lower, staging, parent, venv, writable_venv=step.kind != "apt")
        for name, command, extra in self._commands(step, venv, uv):
            sandbox.binds += extra.binds
            await self.run(sandbox.argv(command, {**env, **extra.env}), host_env(), build, name=name)
            del sandbox.binds[len(sandbox.binds) - len(extra.binds):]
        try:
            await self.run(sandbox.argv([str(venv / "bin" / "python"), "-c", BASE_CHECK],
                                         {**env, "PYTHONDONTWRITEBYTECODE": "1"}), host_env(), None,
                            name="the image's Python after this step")
        except BuildFailed as exc:
            raise BuildFailed(f"the step left a system where the image's Python no longer runs: {exc}") from None
        await asyncio.to_thread(self._keep, sandbox, lower, staging / ROOTFS)
        if sandbox.venv is not None and await asyncio.to_thread(self._keep_venv, sandbox.venv, staging / VENV):
            build.say("   the image's venv changed: kept with this layer")
            return parent.after(key, rootfs=key, env=image_env, venv=key)
        return parent.after(key, rootfs=key, env=image_env)


    @staticmethod
    def _keep(sandbox: system.StepSandbox, lower: Path, rootfs: Path) -> None:
        """The step's changes applied to a hard-link copy of ``lower`` in ``rootfs``."""
        system.prune(sandbox.upper, lower, sandbox.mount_points())
        system.link_tree(lower, rootfs)
        system.apply_upper(sandbox.upper, rootfs)
        for folder in (sandbox.upper, sandbox.work, sandbox.merged):
            shutil.rmtree(folder, ignore_errors=True)


    @staticmethod
    def _keep_venv(overlay: system.Overlay, venv: Path) -> bool:
        """The step's changes to the image's venv applied to a hard-link copy of it in ``venv``, if it made any."""
        try:
            if not any(overlay.upper.iterdir()):
                return False
            system.link_tree(overlay.lower, venv)
            system.apply_upper(overlay.upper, venv)
            return True
        finally:
            for folder in (overlay.upper, overlay.work, overlay.merged):
                shutil.rmtree(folder, ignore_errors=True)


    def sandbox(self, lower: Path, staging: Path, layer: Layer, venv: Path,
                writable_venv: bool = False) -> system.StepSandbox:
        """A build command's sandbox over ``lower``: the image's venv (read-only, or written through an
        overlay of its own) and interpreter, the runtime's code."""
        reads = [*([] if writable_venv else [str(venv)]), str(self.store.code), *python_roots(str(self.root.parent))]
        if not layer.base_prefix.startswith("/usr"):
            reads.append(layer.base_prefix)
        binds = [(path, path, False) for path in sorted(set(reads))]
        overlay = system.Overlay(venv, staging / "venv-upper", staging / "venv-work", staging / "venv-merged")
        return system.StepSandbox(lower, staging / "upper", staging / "work", staging / "merged", binds,
                                  venv=overlay if writable_venv else None)


    def _commands(self, step: ImageStep, venv: Path, uv: Uv) -> list[tuple[str, list[str], _Extra]]:
        """The build commands of a system step: (how the log names it, its command line, its extras)."""
        none = _Extra()
        if step.kind == "run":
            pip = self._pip(uv)
            return [(f"`{command}`", ["/bin/sh", "-c", command], pip) for command in step.commands]
        if step.kind == "apt":
            apt = ["apt-get", "-q"] + ([] if os.geteuid() == 0 else ["-o", "APT::Sandbox::User=root"])
            return [("apt-get update", [*apt, "update"], none),
                    ("apt-get install", [*apt, "install", "-y", *step.packages], none),
                    ("apt-get clean", ["/bin/sh", "-c", "apt-get clean && rm -rf /var/lib/apt/lists/*"], none)]
        extra = self._pip(uv)
        extra.binds.append((str(self.blob(str(step.digest))), FUNCTION_BLOB, False))
        extra.env.update({"PYTHONUNBUFFERED": "1", IN_CONTAINER_ENV: "1"})
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


    def _pip(self, uv: Uv) -> _Extra:
        """What makes ``pip`` (and ``uv pip``) in a run or function step install into the image's venv
        (``container.build_pip``): its commands (first on the paths: ``step``), uv and what it reads."""
        tools = build_pip_tools(self.root / "build-tools")
        install = uv.install_options()
        extra = self._uv(uv, install)
        extra.binds.append((tools, BUILD_TOOLS, False))
        extra.env.update({build_pip.UV_ENV: BUILD_UV, build_pip.ARGS_ENV: json.dumps(install)})
        return extra


    @staticmethod
    def _uv(uv: Uv, words: list[str]) -> _Extra:
        """uv in a build sandbox: its binary at ``BUILD_UV``, the local files ``words`` name (the pins, the
        wheels, a ``file://`` index and the folder beside it) and its CA bundle read-only, a private cache."""
        reads = {uv.binary: BUILD_UV}
        cert = uv.index.uv_env().get("SSL_CERT_FILE")
        for word in [*words, *([cert] if cert else [])]:
            path = word.removeprefix("file://")
            if word.startswith("file://") and path.rstrip("/").endswith("/simple"):
                path = os.path.dirname(path.rstrip("/"))  # a local index's pages link to files beside them
            if path.startswith("/") and os.path.exists(path):
                reads[path] = path
        env = {**uv.index.uv_env(), "UV_CACHE_DIR": "/tmp/uv-cache", "UV_LINK_MODE": "copy",
               "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1", "UV_NO_PROGRESS": "1"}
        return _Extra(binds=[(host, inside, False) for host, inside in reads.items()], env=env)


    async def install(self, build: Says, key: str, parent: Layer, step: ImageStep, staging: Path, uv: Uv) -> Layer:
        """An install step of an image with a root filesystem: uv runs in a sandbox over it, so a package built
        from source finds what the image's apt steps put there (headers, compilers, git); only the venv is kept."""
        lower = self.store.rootfs(parent)
        assert lower is not None, "install() is for an image with a root filesystem"
        venv = self.store.venv(parent)
        argv = [BUILD_UV, *uv.install(venv, list(step.packages), step)[1:]]
        extra = self._uv(uv, [word for word in argv if not word.startswith(str(venv))])  # the venv: its own
        sandbox = self.sandbox(lower, staging, parent, venv, writable_venv=True)
        sandbox.binds += extra.binds
        try:
            await self.run(sandbox.argv(argv, {**system.python_env(venv, parent.env), **extra.env}), host_env(),
                           build, name="uv pip install")
        finally:
            for folder in (sandbox.upper, sandbox.work, sandbox.merged):  # the system is the parent's, unchanged
                shutil.rmtree(folder, ignore_errors=True)
        assert sandbox.venv is not None
        changed = await asyncio.to_thread(self._keep_venv, sandbox.venv, staging / VENV)
        return parent.after(key, venv=key) if changed else parent.after(key)


    async def _base_system(self, build: Says, parent: Layer) -> Path:
        """The base system for an image whose interpreter lives at ``parent.base_prefix`` (made once)."""
        release = self.releases.get(parent.base_prefix)
        if release is None:
            try:
                release = await asyncio.to_thread(system.base_release, [parent.base_prefix])
            except system.SystemUnavailable as exc:
                raise BuildFailed(str(exc)) from None
            self.releases[parent.base_prefix] = release
        key = release.key()
        async with self.locks[f"system-{key}"]:
            found = self.store.system(key)
            if found is not None:
                return found
            build.say(f"   making a base system: Debian {release.codename} ({release.arch}, minbase) with "
                      f"{', '.join(release.packages)} (once: it is cached)")
            staging = self.store.stage(key)
            try:
                command = release.bootstrap(shutil.which("mmdebstrap") or "mmdebstrap", staging / ROOTFS)
                await self.run(command, host_env(), build, name="mmdebstrap")
                await asyncio.to_thread(system.fix_links, staging / ROOTFS)
                return self.store.commit_system(staging, key)
            finally:
                shutil.rmtree(staging, ignore_errors=True)



@dataclass
class _Extra:
    """What one build command adds to its step's sandbox: binds (host path, container path, writable), variables."""

    binds: list[tuple[str, str, bool]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)



def build_pip_tools(folder: Path) -> str:
    """The ``pip``, ``pip3`` and ``uv`` commands and the ``pip`` module of a build step (``container.build_pip``),
    written into ``folder`` once."""
    run = 'exec "${VIRTUAL_ENV:?}/bin/python" -m remotecell_runtime.container.build_pip'
    files = {"bin/pip": f'#!/bin/sh\n{run} "$@"\n', "bin/pip3": f'#!/bin/sh\n{run} "$@"\n',
             "bin/uv": f'#!/bin/sh\n{run} --as-uv "$@"\n', "py/pip/__init__.py": "",
             "py/pip/__main__.py": "import sys\n\nfrom remotecell_runtime.container.build_pip import main\n\n"
                                   "sys.exit(main(sys.argv[1:]))\n"}
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755)
    return str(folder)


def host_env() -> dict[str, str]:
    """What a step's sandbox command itself runs with (bwrap clears it for the step)."""
    return {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
