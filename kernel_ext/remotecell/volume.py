"""``remotecell.volume``, as Modal's ``modal.volume`` (``volumes`` has it)."""

from __future__ import annotations

from .volumes import FileEntry, FileEntryType, Volume, VolumeInfo

__all__ = ["FileEntry", "FileEntryType", "Volume", "VolumeInfo"]
