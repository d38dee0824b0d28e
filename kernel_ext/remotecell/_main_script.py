"""Whether a definition of ``__main__`` travels by reference: ``python app.py`` as Modal treats it.

Modal ships a function of a script run as ``python app.py`` as a file definition: the container imports the
entry file by its module name (``app``, the file's stem; ``pkg.app`` for ``python -m pkg.app``) from the
shipped source, so the script's module-level code runs there as it does for ``modal run app.py``, and
``__name__`` there is ``app``, never ``__main__`` (its ``if __name__ == "__main__":`` block does not run).
``main_reference`` says when that is safe here:

- ``__main__`` is a ``.py`` file (not ``python -c``, stdin, a notebook or a REPL), the definition's code is in
  that file (not typed later at ``python -i``'s prompt), and the container can import it by that name (an
  identifier, no other module of that name imported here, found on the import path as that very file);
- the call that ships it (``app.run()``, ``app.deploy()``, a first ``.remote()``) comes from the script's
  ``if __name__ == "__main__":`` block, read from the main thread's ``<module>`` frame. A script that calls
  its app at top level unguarded would call it again as the container imports it: Modal refuses that in the
  container ("Can not run an app in global scope within a container"); here such a script keeps travelling
  by value, as it did before, so it still runs.

Anything else returns None: by value (``_references``).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import os
import sys
import threading
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any


def main_reference(definition: Any) -> tuple[str, str] | None:
    """(the module name the container imports ``__main__`` by, the folder its source is shipped from), when
    ``definition`` (a function or class of ``__main__``) may travel by reference; else None.

    >>> main_reference(square)        # `python app.py`, app.run() under `if __name__ == "__main__":`
    ('app', '/home/me/project')
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(definition, "__module__", None) != "__main__":
        return None
    file = getattr(main, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py") or not os.path.isfile(file):
        return None
    path = os.path.realpath(file)
    name = _importable_name(main, path)
    if name is None or not _defined_in(definition, path) or not _called_from_main_block(main, path):
        return None
    root = Path(path).parent
    for _ in name.split(".")[1:]:  # pkg.app: the folder that holds pkg
        root = root.parent
    return name, str(root)


def _importable_name(main: ModuleType, path: str) -> str | None:
    """Its name as a module (``__spec__.name`` for ``python -m``, else the file's stem), if importing that name
    finds this very file and nothing else by that name is imported here."""
    spec = getattr(main, "__spec__", None)
    name = spec.name if spec is not None and spec.name not in (None, "__main__") else Path(path).stem
    if not all(part.isidentifier() for part in name.split(".")) or name in sys.modules:
        return None
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = found.origin if found is not None and found.has_location else None
    return name if origin is not None and os.path.realpath(origin) == path else None


def _defined_in(definition: Any, path: str) -> bool:
    """A function whose code, or a class one of whose methods, was compiled from ``path``."""
    if inspect.isclass(definition):
        codes = [getattr(inspect.unwrap(v), "__code__", None) for v in vars(definition).values() if callable(v)]
    else:
        codes = [getattr(inspect.unwrap(definition), "__code__", None)]
    return any(c is not None and os.path.realpath(c.co_filename) == path for c in codes)


def _called_from_main_block(main: ModuleType, path: str) -> bool:
    frame = _module_frame(main)
    if frame is None:  # its top level has finished (an atexit hook, `python -i`): nothing tells what it did
        return False
    return any(start <= frame.f_lineno <= end for start, end in _main_blocks(path, os.stat(path).st_mtime_ns))


def _module_frame(main: ModuleType) -> FrameType | None:
    """The main thread's frame that runs the script's top level (shipping may happen on another thread)."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            return frame
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=8)
def _main_blocks(path: str, mtime_ns: int) -> tuple[tuple[int, int], ...]:
    """The line ranges of the file's top-level ``if __name__ == "__main__":`` blocks."""
    try:
        tree = ast.parse(Path(path).read_bytes(), path)
    except (OSError, SyntaxError, ValueError):
        return ()
    return tuple((node.lineno, node.end_lineno or node.lineno) for node in tree.body
                 if isinstance(node, ast.If) and _is_main_test(node.test))


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    values = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(values) == 1
