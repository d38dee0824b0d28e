"""How a remotecell object shows itself in a notebook, without its module importing the widgets.

Call handles, batch stats and schedules define ``_ipython_display_`` as ``_views.show(self)``;
each view module of ``widgets/`` registers a show function for its types when imported.
Invariant: this module imports no model and no widget at module level; the first display
imports the view modules by name (``VIEW_MODULES``), as a plugin registry does, so the
models never import their widgets and the widgets import the models freely.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

VIEW_MODULES = ("remotecell.widgets.calls", "remotecell.widgets.batching", "remotecell.widgets.schedules")

_shows: dict[type, Callable[[Any], object]] = {}


def register(kind: type, show: Callable[[Any], object]) -> None:
    """``show(obj)`` displays objects of ``kind`` (a view module calls this when imported)."""
    _shows[kind] = show


def show(obj: Any) -> None:
    """Display ``obj`` with the view of its type; IPython calls this through ``_ipython_display_``."""
    if not _shows:
        for name in VIEW_MODULES:
            importlib.import_module(name)
    for kind in type(obj).__mro__:
        if kind in _shows:
            _shows[kind](obj)
            return
    raise LookupError(f"no notebook view for {type(obj).__name__}; views exist for "
                      f"{sorted(k.__name__ for k in _shows)}")
