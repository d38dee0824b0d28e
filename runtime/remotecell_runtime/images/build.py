"""One image build as its askers see it: what it does now, its output as it comes, its outcome.

Kept apart from ``builder`` (which imports the whole build machinery): the pools and
services that wait for builds import this at the runtime's start, the builder only
once an image is first used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends.base import ContainerImage
from ..protocol.image_spec import ImageSpec


@dataclass(eq=False)
class Build:
    """One image being built (or built, or failed): what it does now, its output, its outcome."""

    key: str
    spec: ImageSpec
    started: float = field(default_factory=time.monotonic)
    doing: str = "starting"
    listeners: list[Callable[[str], None]] = field(default_factory=list)
    task: asyncio.Task[ContainerImage] | None = None
    ended: float | None = None

    def progress(self) -> str:
        """What it does now and for how long it has been at it, as a pool's waiting reason says it."""
        return f"building its image: {self.doing} ({time.monotonic() - self.started:.0f} s)"

    def say(self, line: str) -> None:
        for listener in list(self.listeners):
            listener(line)

    @property
    def error(self) -> str | None:
        """Why it failed, once it has."""
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        exc = self.task.exception()
        return str(exc) if exc is not None else None
