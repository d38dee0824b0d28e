"""``remotecell.retries``, as Modal's ``modal.retries``."""

from __future__ import annotations

from .options import Retries

__all__ = ["Retries"]
