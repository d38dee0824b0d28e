"""``remotecell.image``, as Modal's ``modal.image`` (``images`` has it)."""

from __future__ import annotations

from .images import Image

__all__ = ["Image"]
