"""``pip`` (and ``uv pip``) in an image's build commands: ``uv pip`` on the image's venv, under the runtime's pins.

A ``run_commands("pip install ...")`` or a ``run_function`` that shells out to pip
must install into the image's venv, as Modal's images do; that venv has no pip
(uv makes it) and must keep the runtime's own packages at their versions.  So the
build puts ``pip``, ``pip3`` and ``uv`` commands first on ``PATH`` (and a ``pip``
module first on ``PYTHONPATH``, for ``python -m pip``) that land here:

    pip install -q "six==1.17.0"       ->  uv pip install --python VENV/bin/python <pins, index> -q six==1.17.0
    uv pip install --system pkg        ->  the same (the image's venv is its Python)
    uv venv ...                        ->  the real uv, untouched

Invariant: every install gets the arguments the builder gave in ``ARGS_ENV`` (the
pins as constraints, the runtime's wheels, the host's index settings), so a
package that needs other versions of the runtime's own fails here, naming both.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

UV_ENV = "REMOTECELL_BUILD_UV"  # the uv binary, bound read-only into the build sandbox
ARGS_ENV = "REMOTECELL_BUILD_UV_ARGS"  # JSON: what every install gets after ``uv pip install``
COMMANDS = ("install", "uninstall", "list", "freeze", "show", "check", "tree")
DROPPED = ("--no-cache-dir", "--disable-pip-version-check", "--no-warn-script-location", "--no-input",
           "--no-python-version-warning", "--break-system-packages", "--system")
DROPPED_WITH_VALUE = ("--root-user-action", "--progress-bar")


class Refused(Exception):
    """A pip command line this shim cannot carry out as asked: what to do instead."""


def translated(args: Sequence[str]) -> list[str]:
    """pip's options as uv's: the ones that change nothing here dropped, ``--pre`` as uv spells it."""
    out: list[str] = []
    words = iter(args)
    for word in words:
        name = word.split("=", 1)[0]
        if name in DROPPED:
            continue
        if name in DROPPED_WITH_VALUE:
            if "=" not in word:
                next(words, None)
            continue
        if name in ("--user", "--prefix", "--root"):
            raise Refused(f"pip {name}: an image build installs into the image's venv only; drop {name}")
        out.append("--prerelease=allow" if word == "--pre" else word)
    return out


def uv_command(args: Sequence[str], python: str, install_args: Sequence[str]) -> list[str]:
    """The ``uv pip`` arguments (after the binary) for pip's ``args``; ``Refused`` for what it cannot do."""
    if not args or args[0] in ("-V", "--version"):
        return ["--version"]
    command, rest = args[0], translated(args[1:])
    if command not in COMMANDS:
        raise Refused(f"pip {command}: in an image build `pip` is `uv pip`, which does "
                      f"{', '.join(COMMANDS)}; run `uv pip {command} ...` yourself if uv has it")
    if command == "uninstall":
        rest = [word for word in rest if word not in ("-y", "--yes")]  # uv never asks
    extra = list(install_args) if command == "install" else []
    return ["pip", command, "--python", python, *extra, *rest]


def main(argv: Sequence[str], as_uv: bool = False) -> int:
    uv = os.environ.get(UV_ENV)
    if not uv:
        print("this pip only works in an image's build step (run_commands, run_function)", file=sys.stderr)
        return 2
    if as_uv and (not argv or argv[0] != "pip"):
        os.execv(uv, [uv, *argv])  # uv's other commands are uv's own
    install_args = json.loads(os.environ.get(ARGS_ENV) or "[]")
    try:
        args = uv_command(argv[1:] if as_uv else argv, sys.executable, install_args)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.execv(uv, [uv, *args])


if __name__ == "__main__":
    uv_mode = len(sys.argv) > 1 and sys.argv[1] == "--as-uv"
    sys.exit(main(sys.argv[2:] if uv_mode else sys.argv[1:], as_uv=uv_mode))
