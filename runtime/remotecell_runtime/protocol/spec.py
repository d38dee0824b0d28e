"""What a container loads for a remote class (kept import-light: containers unpickle it at start)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClsSpec:
    """The class, its parameters, and the roles of its methods."""

    cls: Any  # the class; in transit, a ByReference when it travels by name (container/references.py)
    params: dict[str, Any]
    methods: list[str] = field(default_factory=list)
    enter_hooks: list[str] = field(default_factory=list)
    exit_hooks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ByReference:
    """A module-level function or class that travels by name, as Modal's do: the container imports ``module``
    (from ``source``, a tar of the app's own modules it puts first on its import path, or from the image when
    ``source`` is None) and takes its ``attribute``; ``unwrap``: that is remotecell's wrapper (``Function``,
    ``Cls``), the definition its ``__wrapped__``. Only names and the source's bytes: no code is pickled."""

    module: str
    attribute: str
    unwrap: bool
    source: bytes | None = None
    digest: str = ""  # the source's sha256: where it is unpacked, shared by the containers of one version
