"""Which modules are the user's own, and how their functions travel: by value, or by reference.

A function from ``__main__``, a notebook or a module only this machine has travels by value
(cloudpickle: its code and globals); ``ship_module_by_value`` marks such modules. A function
defined at module level in a file given to ``remotecell run``/``deploy``/``serve`` (or in a
module that file imports from its folder) travels by reference, as Modal's do: the folders of
those files are ``reference_roots``, and ``_references`` ships the source and names the function.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cloudpickle

_INSTALLED = tuple(
    os.path.realpath(p) for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                                  sysconfig.get_paths()["stdlib"]}
)
# The folders of the files `remotecell run`/`deploy`/`serve` loaded (`_entry`): their modules go by reference.
_REFERENCE_ROOTS: list[str] = []


def add_reference_root(folder: str) -> None:
    """Module-level functions of modules under ``folder`` travel by reference from now on (``_entry``)."""
    real = os.path.realpath(folder)
    if real not in _REFERENCE_ROOTS:
        _REFERENCE_ROOTS.append(real)


def user_module(fn: Any) -> ModuleType | None:
    """The module of ``fn`` when it is the user's own file (not ``__main__``, installed, or remotecell's)."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    return module if module is not None and user_module_of(module) else None


def under_reference_root(module: ModuleType) -> bool:
    path = os.path.realpath(str(getattr(module, "__file__", "") or ""))
    return any(path.startswith(root + os.sep) for root in _REFERENCE_ROOTS)


def local_modules() -> list[str]:
    """The top-level names of the imported modules that live under a reference root (the app's own source; a
    namespace package, which has no file of its own, by the modules in it)."""
    names: set[str] = set()
    for name, module in list(sys.modules.items()):
        if module is not None and user_module_of(module) and under_reference_root(module):
            names.add(name.split(".")[0])
    return sorted(names)


def user_module_of(module: ModuleType) -> bool:
    """A module of the user's own files: not ``__main__``, not installed, not remotecell's."""
    path = getattr(module, "__file__", None)
    if not path or module.__name__ == "__main__" or module.__name__.split(".")[0] == "remotecell":
        return False
    return not os.path.realpath(str(path)).startswith(_INSTALLED)


def ship_module_by_value(fn: Callable[..., Any]) -> None:
    """Functions from the user's own files travel by value, like those of ``__main__``.

    The runtime cannot import a module that lives only in the caller's working
    directory (a script, a test file); installed packages are imported there.
    """
    module = user_module(fn)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
