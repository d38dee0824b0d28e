"""``remotecell.secret``, as Modal's ``modal.secret`` (``infra`` has it)."""

from __future__ import annotations

from .infra import Secret

__all__ = ["Secret"]
