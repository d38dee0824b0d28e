"""uv as the image builder runs it: the command lines of a venv and of an install, and their environment.

Every install gets the runtime's pins as constraints and its repacked wheels as
find-links (``runtime_code``), the host's index settings (``pipconf``, since uv
ignores pip's config), then the step's own (index, extra index, find-links,
``pre``, and the ``extra_options`` that ``EXTRA_OPTIONS`` allows), and compiles
bytecode: a container reads its layer read-only and could not cache it.

Invariants: uv's cache is ``STATE/images/uv-cache``, beside the layers (one file
system), and uv links from it with hard links (``UV_LINK_MODE=hardlink``): an
installed file is a new link, never a file uv wrote into (a layer's copy shares
its parent's files, see ``layers``).  An option that would make uv install
elsewhere, use another interpreter or read other files is refused where the
image is registered (``checked_options``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocol.image_spec import ImageStep

if TYPE_CHECKING:  # types only: ``steps`` checks options with this module at every app's registration
    from .pipconf import IndexSettings
    from .runtime_code import RuntimeCode

# uv pip install options a step may add (extra_options): they change what is resolved, not where it goes.
EXTRA_OPTIONS = ("--no-deps", "--upgrade", "-U", "--reinstall", "--no-build-isolation", "--no-binary",
                 "--only-binary", "--no-build", "--prerelease", "--resolution", "--index-strategy", "--no-sources",
                 "--exclude-newer", "--upgrade-package", "-P", "--reinstall-package", "--config-setting", "-C",
                 "--no-build-isolation-package", "--compile-bytecode")


class UvMissing(RuntimeError):
    """No uv binary here: what to install."""


def find_binary() -> str:
    """The uv binary: the one the ``uv`` package ships (a dependency of the runtime), else uv on ``PATH``."""
    try:
        import uv  # the package of the binary

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise UvMissing("uv is not installed where the runtime runs: pip install uv (images are built with it)"
                            ) from None
        return found


def interpreter(python_version: str | None) -> str:
    """What ``uv venv --python`` gets: the runtime's own interpreter for its own version, else the version."""
    v = sys.version_info
    if python_version in (None, f"{v.major}.{v.minor}", f"{v.major}.{v.minor}.{v.micro}"):
        return sys.executable
    return str(python_version)


def checked_options(extra_options: str) -> list[str]:
    """``extra_options`` as arguments; ``ValueError`` naming an option not in ``EXTRA_OPTIONS``."""
    try:
        words = shlex.split(extra_options)
    except ValueError as exc:
        raise ValueError(f"extra_options={extra_options!r} cannot be read: {exc}") from None
    for word in words:
        if word.startswith("-") and word.split("=", 1)[0] not in EXTRA_OPTIONS:
            raise ValueError(f"extra_options: {word.split('=', 1)[0]!r} is not an option an image step may give "
                             f"uv here; these are: {', '.join(EXTRA_OPTIONS)}")
    return words


class Uv:
    """The uv commands of one runtime's builds."""

    def __init__(self, binary: str, cache: Path, index: IndexSettings, code: RuntimeCode) -> None:
        self.binary = binary
        self.cache = cache
        self.index = index
        self.code = code

    def environment(self, image_env: Mapping[str, str]) -> dict[str, str]:
        """A build command's variables: the runtime's, the image's so far (``env`` steps), then uv's own."""
        env = {**os.environ, **image_env, **self.index.uv_env()}
        env.pop("VIRTUAL_ENV", None)  # the runtime's own: every command names its interpreter
        env.update(UV_CACHE_DIR=str(self.cache), UV_LINK_MODE="hardlink", NO_COLOR="1", UV_NO_PROGRESS="1")
        return env

    def venv(self, python_version: str | None, folder: Path) -> list[str]:
        return [self.binary, "venv", "--quiet", "--relocatable", "--no-project", "--python",
                interpreter(python_version), str(folder)]

    def install(self, venv: Path, packages: list[str], step: ImageStep | None = None) -> list[str]:
        """``uv pip install`` of ``packages`` into ``venv`` under the pins; ``step``: its own index options."""
        index = self.index if step is None else self.index.with_step(step.index_url, step.extra_index_url,
                                                                      step.find_links)
        argv = [self.binary, "pip", "install", "--python", str(venv / "bin" / "python"), *self.install_options(index)]
        if step is not None:
            argv += (["--prerelease", "allow"] if step.pre else []) + checked_options(step.extra_options)
        return argv + packages

    def install_options(self, index: IndexSettings | None = None) -> list[str]:
        """What every install gets: bytecode, the pins as constraints, the runtime's wheels, the index settings."""
        return ["--compile-bytecode", "--constraint", str(self.code.constraints), "--find-links",
                str(self.code.wheels), *(index or self.index).uv_args()]

    def pythons(self) -> list[str]:
        """The command that lists the interpreters uv finds here (for a build that found none)."""
        return [self.binary, "python", "list", "--only-installed", "--output-format", "json"]
