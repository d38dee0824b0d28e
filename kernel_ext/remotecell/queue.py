"""``remotecell.queue``, as Modal's ``modal.queue``: the Queue store (``stores`` has it)."""

from __future__ import annotations

from .stores import Queue, QueueInfo

__all__ = ["Queue", "QueueInfo"]
