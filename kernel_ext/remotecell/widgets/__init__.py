"""Notebook views of remotecell objects (ipywidgets when installed, else updating plain text).

Imported by the IPython extension, never by the runtime.
"""

from __future__ import annotations

from .progress import progress_view

__all__ = ["progress_view"]
