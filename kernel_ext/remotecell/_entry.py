"""What ``remotecell deploy`` and ``remotecell run`` do with a file: load it, find its app, call its entrypoint."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._user_modules import add_reference_root
from .app import App
from .cls import _NO_DEFAULT, Cls
from .exceptions import InvalidError
from .functions import Function

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
    sys.modules[name] = module
    sys.path.insert(0, str(file.resolve().parent))  # its sibling modules import as they would for `python file.py`
    add_reference_root(str(file.resolve().parent))  # its functions, and its siblings', travel by reference
    spec.loader.exec_module(module)
    return vars(module)


def load_module(name: str) -> dict[str, Any]:
    """``remotecell run -m package.module``: import it by name, from the current folder as ``python -m`` would."""
    # importlib imports any name of word characters (Modal's examples run `modal run 05_scheduling.custom_retries`)
    if not all(re.fullmatch(r"\w+", part) for part in name.split(".")):
        raise InvalidError(f"{name!r} is not a module name: give a dotted name such as 'package.module'")
    sys.path.insert(0, os.getcwd())
    add_reference_root(os.getcwd())
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise InvalidError(f"no module named {name!r} here (looked in {os.getcwd()} and sys.path)") from None
        raise
    return vars(module)


def find_app(namespace: dict[str, Any], path: str) -> App:
    apps = {id(v): v for v in namespace.values() if isinstance(v, App)}
    if len(apps) != 1:
        found = ", ".join(sorted(a.name for a in apps.values())) or "none"
        raise InvalidError(f"{path} must declare exactly one rc.App at top level (found: {found})")
    return next(iter(apps.values()))


@dataclass(frozen=True)
class RunTarget:
    """What ``remotecell run`` calls: ``call(**kwargs)``, its arguments read from ``signature``'s parameters."""

    name: str
    call: Callable[..., Any]
    signature: Callable[..., Any]


def find_entrypoint(app: App, path: str, wanted: str | None) -> RunTarget:
    """The local entrypoint, function (called ``.remote``) or ``Class.method`` of the app that ``wanted`` names;
    without a name, the one local entrypoint, else the one function."""
    entrypoints = app.local_entrypoints
    functions = {name: f for name, f in app.functions.items() if isinstance(f, Function)}
    if wanted is None:
        if len(entrypoints) == 1:
            wanted = next(iter(entrypoints))
        elif not entrypoints and len(functions) == 1:
            wanted = next(iter(functions))
        else:
            raise InvalidError(f"{path} has several local entrypoints and functions ({_choices(app)}): name one as "
                               f"{path}::NAME" if entrypoints or functions else
                               f"{path} has no @app.local_entrypoint() and no function: nothing to run")
    asked = wanted
    prefix, _, rest = wanted.partition(".")
    if rest and not isinstance(app.functions.get(prefix), Cls):  # Modal's FILE::app.NAME (the App's variable)
        wanted = rest
    if wanted in entrypoints:
        return RunTarget(wanted, entrypoints[wanted], entrypoints[wanted])
    if wanted in functions:
        f = functions[wanted]
        return RunTarget(wanted, _remote_call(f), f.raw_f)
    cls_name, _, method = wanted.partition(".")
    c = app.functions.get(cls_name)
    if isinstance(c, Cls) and method in c.roles["method"]:
        call = _method_call(c, method)
        return RunTarget(wanted, call, call)
    raise InvalidError(f"{path} has no local entrypoint, function or Class.method {asked!r} "
                       f"(it has: {_choices(app) or 'none'})")


def _method_call(c: Cls, method: str) -> Callable[..., Any]:
    """``Class.method``: the class's ``rc.parameter`` fields and the method's parameters as one set of options
    (as Modal's CLI reads them); the instance of those parameters is called."""
    fn = getattr(c.user_cls, method)
    own = list(inspect.signature(fn).parameters.values())[1:]  # less self
    hints = {k: v for k, v in typing.get_type_hints(fn).items() if k != "return"}
    fields = {n: p for n, p in c.parameters.items() if p.init}
    clash = sorted(set(fields) & {p.name for p in own})
    if clash:
        raise InvalidError(f"{c.name}.{method}: {clash} are both class parameters and method parameters; "
                           "`remotecell run` cannot tell them apart")
    empty = inspect.Parameter.empty
    options = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=p.kind,
                                 default=empty if p.default is _NO_DEFAULT else p.default) for n, p in fields.items()]
    options += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is p.POSITIONAL_OR_KEYWORD else p
                for p in own]

    def call(**kwargs: Any) -> Any:
        instance = c(**{n: kwargs.pop(n) for n in fields if n in kwargs})
        return _remote_call(getattr(instance, method))(**kwargs)

    call.__name__ = method
    call.__doc__ = inspect.getdoc(fn)
    call.__signature__ = inspect.Signature(options)  # type: ignore[attr-defined]
    call.__annotations__ = {**{n: p.kind for n, p in fields.items()}, **hints}
    return call


def _choices(app: App) -> str:
    names = sorted(app.local_entrypoints) + sorted(n for n, f in app.functions.items() if isinstance(f, Function))
    names += sorted(f"{n}.{m}" for n, c in app.functions.items() if isinstance(c, Cls) for m in c.roles["method"])
    return ", ".join(names)


def _remote_call(f: Function) -> Callable[..., Any]:
    """``f.remote``, or for a generator its items printed as they come (``remotecell run`` of a generator)."""
    if not f.registration.is_generator(f.method):
        return f.remote

    def items(**kwargs: Any) -> None:
        for item in f.remote_gen(**kwargs):
            print(item)

    return items


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
        kind = _optional_of(hints.get(param.name, str))
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


def _optional_of(kind: Any) -> Any:
    """``int | None`` (``Optional[int]``) reads as ``int``: a default of None is a default like any other."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return kind
