"""``remotecell.sandbox``, as Modal's ``modal.sandbox`` (``sandboxes`` has them)."""

from __future__ import annotations

from .sandboxes import ContainerProcess, Sandbox

__all__ = ["ContainerProcess", "Sandbox"]
