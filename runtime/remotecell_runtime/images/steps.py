"""Which image steps this runtime builds, checked where an image is registered, and how a build log names them.

Built: the base (a venv of the asked Python; for ``from_registry`` also the
image's root filesystem, pulled), ``pip``/``uv_pip`` (one ``uv pip install``),
``env``, ``workdir``, ``files`` (``copy=True`` a layer, ``copy=False`` put in place
at container start), and the system steps ``apt`` (``apt_install``), ``run``
(``run_commands``) and ``function`` (``run_function``), which give the image a root
filesystem of its own (``system``).  Without the container sandbox nothing can be
put at a path of the container, nor can a container have its own root
filesystem, so ``files`` steps other than Python sources (``/root``, put on the
import path instead), ``workdir``, system steps and registry bases are refused
there.
"""

from __future__ import annotations

import json
import re

from ..protocol.image_spec import ImageSpec, ImageStep
from .uv import checked_options

PYTHON_SOURCE_ROOT = "/root"  # where add_local_python_source puts modules: first on a container's import path
SYSTEM_KINDS = ("apt", "run", "function")
BUILT = ("pip", "uv_pip", "env", "workdir", "files", *SYSTEM_KINDS)
APT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.:~=/_-]*$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
NO_SANDBOX = ("this runtime runs containers without the sandbox (bubblewrap), so {what}; `remotecell status` says "
              "why the sandbox is off")


class BuildFailed(Exception):
    """A step that failed: the message names it and quotes its last output lines."""


class ImageError(ValueError):
    """An image spec the runtime refuses: the message says what is wrong."""


def check(spec: ImageSpec, sandboxed: bool) -> None:
    """Refuse what this runtime cannot build or put in place, saying what it does build."""
    if spec.base == "registry":
        if not spec.registry_tag or any(c.isspace() for c in spec.registry_tag):
            raise ImageError(f"Image.from_registry({spec.registry_tag!r}): not an image reference")
        from . import oci  # its HTTP client costs a runtime's start ~5 ms: only for registry bases

        try:
            oci.Reference.parse(spec.registry_tag)
        except oci.PullFailed as exc:
            raise ImageError(str(exc)) from None
        if not sandboxed:
            raise ImageError(f"Image.from_registry({spec.registry_tag!r}): " + NO_SANDBOX.format(
                what="no container can run in an image's own root filesystem; use Image.debian_slim()"))
    elif spec.base != "debian_slim":
        raise ImageError(f"unknown image base {spec.base!r}: Image.debian_slim() or Image.from_registry(tag)")
    for number, step in enumerate(spec.steps, 1):
        where = f"image step {number} ({describe(step)})"
        if step.kind not in BUILT:
            raise ImageError(f"{where}: unknown step kind {step.kind!r}")
        _check_step(step, where, sandboxed)


def _check_step(step: ImageStep, where: str, sandboxed: bool) -> None:
    if step.kind in ("pip", "uv_pip"):
        for package in step.packages:
            if not package.strip() or package.lstrip().startswith("-") or "\n" in package:
                raise ImageError(f"{where}: {package!r} is not a requirement specifier (no pip options)")
        try:
            checked_options(step.extra_options)
        except ValueError as exc:
            raise ImageError(f"{where}: {exc}") from None
    elif step.kind in ("workdir", "files"):
        if not step.path or not step.path.startswith("/"):
            raise ImageError(f"{where}: {step.path!r} is not an absolute path in the container")
        if step.kind == "files" and not step.digest:
            raise ImageError(f"{where}: names no blob of its files")
        if not sandboxed and (step.kind == "workdir" or step.path != PYTHON_SOURCE_ROOT):
            raise ImageError(f"{where}: " + NO_SANDBOX.format(
                what="it can put nothing at a path of theirs (add_local_python_source works: it goes on their "
                     "import path)"))
    elif step.kind in SYSTEM_KINDS:
        _check_system(step, where)
        if not sandboxed:
            raise ImageError(f"{where}: " + NO_SANDBOX.format(
                what="no container can run in an image's own root filesystem, which this step makes"))


def _check_system(step: ImageStep, where: str) -> None:
    if step.kind == "apt":
        bad = [p for p in step.packages if not APT_NAME.match(p)]
        if not step.packages or bad:
            raise ImageError(f"{where}: {bad or step.packages!r}: give Debian package names, such as 'git'")
    elif step.kind == "run":
        if not step.commands or any(not c.strip() for c in step.commands):
            raise ImageError(f"{where}: {step.commands!r} holds no command, or an empty one")
    elif not step.digest or not DIGEST.match(step.digest):
        raise ImageError(f"{where}: names no blob of its function")
    elif any(not p.startswith("/") or p.rstrip("/") == "" for p in step.volumes):
        raise ImageError(f"{where}: volume paths {sorted(step.volumes)} must be absolute and below /")


def describe(step: ImageStep) -> str:
    """One step as a build log shows it."""
    if step.kind in ("pip", "uv_pip"):
        return f"{'uv ' if step.kind == 'uv_pip' else ''}pip install {' '.join(step.packages)}"
    if step.kind == "env":
        return f"env {json.dumps(step.env, sort_keys=True)}"
    if step.kind == "workdir":
        return f"workdir {step.path}"
    if step.kind == "files":
        return f"add files at {step.path}{' (copy)' if step.copy else ''}"
    if step.kind == "apt":
        return f"apt install {' '.join(step.packages)}"
    if step.kind == "run":
        return f"run {' && '.join(step.commands)}"
    if step.kind == "function":
        return f"run_function (blob {str(step.digest)[:12]})"
    return f"{step.kind} {' '.join(step.packages or step.commands)}".strip()


def describe_base(spec: ImageSpec) -> str:
    """An image's first layer as a build log shows it."""
    if spec.base == "registry":
        python = f"Python {spec.add_python}" if spec.add_python else "the runtime's Python"
        return f"base: {spec.registry_tag} with {python}"
    return f"base: Python {spec.python_version or 'of the runtime'}"
