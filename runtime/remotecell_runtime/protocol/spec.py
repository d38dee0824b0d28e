"""What a container loads for a remote class (kept import-light: containers unpickle it at start)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClsSpec:
    """The class, its parameters, and the roles of its methods."""

    cls: type
    params: dict[str, Any]
    methods: list[str] = field(default_factory=list)
    enter_hooks: list[str] = field(default_factory=list)
    exit_hooks: list[str] = field(default_factory=list)
