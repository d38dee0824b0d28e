"""``remotecell.schedule``, as Modal's ``modal.schedule`` (``options`` has them)."""

from __future__ import annotations

from .options import Cron, Period

__all__ = ["Cron", "Period"]
