"""``remotecell.dict``, as Modal's ``modal.dict``: the Dict store (``stores`` has it)."""

from __future__ import annotations

from .stores import Dict, DictInfo

__all__ = ["Dict", "DictInfo"]
