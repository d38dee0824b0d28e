"""Which image steps this runtime builds, checked where an image is registered, and how a build log names them.

Built: the base (a venv of the asked Python), ``pip``/``uv_pip`` (one ``uv pip
install``), ``env``, ``workdir`` and ``files`` (``copy=True`` a layer, ``copy=False``
put in place at container start).  Refused at registration, with what is built
instead: ``apt``, ``run``, ``function`` steps and a registry base, which another
builder makes.  Without the container sandbox nothing can be put at a path of the
container, so ``files`` steps other than Python sources (``/root``, put on the
import path instead) and ``workdir`` are refused there.
"""

from __future__ import annotations

import json

from ..protocol.image_spec import ImageSpec, ImageStep
from .layers import PYTHON_SOURCE_ROOT
from .uv import checked_options

BUILT = ("pip", "uv_pip", "env", "workdir", "files")
NOT_YET = {"apt": "apt_install", "run": "run_commands", "function": "run_function"}


class ImageError(ValueError):
    """An image spec the runtime refuses: the message says what is wrong."""


def check(spec: ImageSpec, sandboxed: bool) -> None:
    """Refuse what this runtime cannot build or put in place, saying what it does build."""
    if spec.base != "debian_slim":
        raise ImageError(f"Image.from_registry({spec.registry_tag!r}): registry images are not built by this runtime "
                         "yet; use Image.debian_slim() (a venv of the runtime host's Python) and its steps")
    for number, step in enumerate(spec.steps, 1):
        where = f"image step {number} ({describe(step)})"
        if step.kind in NOT_YET:
            raise ImageError(f"{where}: {NOT_YET[step.kind]} is not built by this runtime yet; it builds "
                             "pip_install, uv_pip_install, env, workdir and add_local_* steps")
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
            raise ImageError(f"{where}: this runtime runs containers without the sandbox (bubblewrap), so it can "
                             "put nothing at a path of theirs (add_local_python_source works: it goes on their "
                             "import path); `remotecell status` says why the sandbox is off")


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
    return f"{step.kind} {' '.join(step.packages or step.commands)}".strip()
