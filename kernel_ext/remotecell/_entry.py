"""What ``remotecell deploy`` and ``remotecell run`` do with a file: load it, find its app, call its entrypoint."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .app import App
from .exceptions import InvalidError

ARG_TYPES: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str}


def load_file(path: str) -> dict[str, Any]:
    """Import ``path`` as a module (not ``__main__``: its ``if __name__ == "__main__"`` block does not run)."""
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise InvalidError(f"{path!r} is not a Python file: give the path of a .py file that declares an rc.App")
    name = file.stem if file.stem.isidentifier() and file.stem not in sys.modules else "remotecell_user_app"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # cloudpickle ships its functions by value (see registration.ship_module_by_value)
    sys.path.insert(0, str(file.resolve().parent))  # its sibling modules import as they would for `python file.py`
    spec.loader.exec_module(module)
    return vars(module)


def find_app(namespace: dict[str, Any], path: str) -> App:
    apps = {id(v): v for v in namespace.values() if isinstance(v, App)}
    if len(apps) != 1:
        found = ", ".join(sorted(a.name for a in apps.values())) or "none"
        raise InvalidError(f"{path} must declare exactly one rc.App at top level (found: {found})")
    return next(iter(apps.values()))


def find_entrypoint(app: App, path: str, wanted: str | None) -> Callable[..., Any]:
    entrypoints = app.local_entrypoints
    if wanted is not None:
        if wanted not in entrypoints:
            raise InvalidError(f"{path} has no @app.local_entrypoint() named {wanted!r} "
                               f"(it has: {', '.join(sorted(entrypoints)) or 'none'})")
        return entrypoints[wanted]
    if not entrypoints:
        raise InvalidError(f"{path} has no @app.local_entrypoint(): mark the function `remotecell run` calls")
    if len(entrypoints) > 1:
        raise InvalidError(f"{path} has several local entrypoints ({', '.join(sorted(entrypoints))}): "
                           f"name one as {path}::NAME")
    return next(iter(entrypoints.values()))


def parse_arguments(fn: Callable[..., Any], argv: list[str], prog: str) -> dict[str, Any]:
    """Keyword arguments for ``fn`` from ``--name value`` options made from its signature.

    Types come from the annotations (int, float, str, bool: ``--flag``/``--no-flag``);
    parameters without a default are required. A bad value exits with argparse's message,
    which names the option.
    """
    hints = typing.get_type_hints(fn)
    parser = argparse.ArgumentParser(prog=prog, description=inspect.getdoc(fn))
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise InvalidError(f"entrypoint {fn.__name__}: *args/**kwargs cannot come from the command line")
        kind = hints.get(param.name, str)
        option, required = f"--{param.name.replace('_', '-')}", param.default is param.empty
        default = None if required else param.default
        if kind is bool:
            parser.add_argument(option, dest=param.name, action=argparse.BooleanOptionalAction, required=required,
                                default=default)
        elif kind in ARG_TYPES:
            parser.add_argument(option, dest=param.name, type=ARG_TYPES[kind], required=required, default=default,
                                metavar=kind.__name__.upper())
        else:
            raise InvalidError(f"entrypoint {fn.__name__}: parameter {param.name!r} is annotated {kind!r}; "
                               "the command line gives int, float, str or bool")
    return vars(parser.parse_args(argv))
