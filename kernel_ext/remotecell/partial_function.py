"""``remotecell.partial_function``, as Modal's ``modal.partial_function``: the decorators."""

from __future__ import annotations

from .cls import enter, exit, method
from .options import batched, concurrent

__all__ = ["batched", "concurrent", "enter", "exit", "method"]
