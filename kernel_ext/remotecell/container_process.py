"""``remotecell.container_process``, as Modal's ``modal.container_process`` (``sandboxes`` has it); an attribute
of the package too, as Modal's is (``p: modal.container_process.ContainerProcess`` in an annotation)."""

from __future__ import annotations

from .sandboxes import ContainerProcess

__all__ = ["ContainerProcess"]
