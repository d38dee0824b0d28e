"""Definitions shipped by reference, as Modal ships them: a module-level function or class of a file given to
``remotecell run``/``deploy``/``serve`` (``_user_modules.under_reference_root``) travels as a ``ByReference``:
its module's name, the attribute that holds it, and the app's own modules' source as a tar. The container
imports the module (``remotecell_runtime.container.references``), so its module-level code runs there once and
the image may run another Python minor version than this process (no code object is pickled).

A script's own definitions (``python app.py``) travel the same way, imported there by the file's module name,
when ``_main_script.main_reference`` says it is safe (a file, and its app started from its ``if __name__ ==
"__main__":`` block). Everything else travels by value (cloudpickle): ``serialized=True``, a notebook, an
interactive ``__main__`` (``python -c``, stdin, a REPL), a script that starts its app unguarded, functions
nested in others, and modules outside the folders of the files the CLI loaded.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from remotecell_runtime.protocol.spec import ByReference, ClsSpec

from . import _image_sources as sources
from ._main_script import main_reference
from ._user_modules import add_reference_root, local_modules, under_reference_root, user_module
from .exceptions import InvalidError
from .file_pattern_matcher import NON_PYTHON_FILES, ignore_fn


def shipped(target: Any, *, serialized: bool = False, include_source: bool | None = None) -> Any:
    """What travels for ``target`` (a function or a ClsSpec): itself (by value), or the same with the function
    or class as a ``ByReference``.

    >>> shipped(square).module          # a module-level function of the file `remotecell run` loaded
    'my_app'
    """
    if serialized:
        return target
    definition = target.cls if isinstance(target, ClsSpec) else target
    ref = reference(definition, include_source is not False)
    if ref is None:
        return target
    return dataclasses.replace(target, cls=ref) if isinstance(target, ClsSpec) else ref


def shipping_of(app: Any, options: dict[str, Any]) -> dict[str, Any]:
    """How a definition travels, from its decorator's options over its app's: ``serialized=True`` by value;
    ``include_source`` (``rc.App(include_source=)``)."""
    return {"serialized": bool(options.get("serialized")),
            "include_source": options.get("include_source", getattr(app, "include_source", None))}


def reference(definition: Any, with_source: bool = True) -> ByReference | None:
    """``definition`` by name, or None when the container could not find it by importing its module."""
    module, name, extra = _module_for(definition)
    if module is None:
        return None
    found = _attribute_of(module, definition)
    if found is None:
        return None
    attribute, unwrap = found
    if not with_source:  # include_source=False: the image has the module (add_local_python_source)
        return ByReference(name, attribute, unwrap)
    modules = tuple(sorted({*local_modules(), *extra}))
    step, data = sources.python_source(modules, False, ignore_fn(NON_PYTHON_FILES)).materialize()
    return ByReference(name, attribute, unwrap, data, str(step.digest))


def _module_for(definition: Any) -> tuple[ModuleType | None, str, tuple[str, ...]]:
    """The module that holds ``definition`` here, the name the container imports it by, and the top-level
    modules its source needs beyond the imported ones under the reference roots (a script's own: ``__main__``
    is none of those)."""
    main = main_reference(definition)
    if main is not None:  # `python app.py`: imported there as `app`, its folder a reference root from now on
        name, root = main
        add_reference_root(root)
        return sys.modules["__main__"], name, (name.split(".")[0],)
    module = user_module(definition)
    if module is None or not under_reference_root(module) or not _importable_as_named(module):
        return None, "", ()
    return module, module.__name__, ()


def by_value_code(definition: Any, shipped_target: Any) -> bool:
    """Whether ``definition`` travels as code objects: shipped by value from ``__main__`` or the user's modules
    (an installed module's travels by name, as cloudpickle pickles it)."""
    if isinstance(shipped_target, ByReference) or (
            isinstance(shipped_target, ClsSpec) and isinstance(shipped_target.cls, ByReference)):
        return False
    return getattr(definition, "__module__", None) == "__main__" or user_module(definition) is not None


def check_by_value_python(name: str, declared: str | None) -> None:
    """By value, code objects travel: an image of another Python minor version would crash on them (SIGSEGV), so
    such a definition is refused here, before anything is built."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    if declared is None or ".".join(declared.split(".")[:2]) == mine:
        return
    raise InvalidError(f"{name} travels by value (cloudpickle: its code objects), which needs the image's Python "
                       f"({declared}) to be this process's minor version ({mine}): define it at module level of a "
                       "file run with `remotecell run`/`deploy`/`serve` (it then travels by reference), leave out "
                       f"serialized=True, or build the image with python_version={mine!r}")


def _importable_as_named(module: ModuleType) -> bool:
    """Its file has its name (``remotecell run my-app.py`` loads a module under another name: by value)."""
    path = Path(str(module.__file__))
    last = module.__name__.rsplit(".", 1)[-1]
    return path.stem == last or (path.stem == "__init__" and path.parent.name == last)


def _attribute_of(module: ModuleType, definition: Any) -> tuple[str, bool] | None:
    """The module attribute that holds ``definition``: itself, or remotecell's wrapper of it (``__wrapped__``)."""
    for name, value in list(vars(module).items()):
        if value is definition:
            return name, False
        if type(value).__module__.startswith("remotecell.") and _wrapped(value) is definition:
            return name, True
    return None


def _wrapped(value: Any) -> Any:
    try:
        return vars(value).get("__wrapped__")
    except TypeError:  # no __dict__
        return None
