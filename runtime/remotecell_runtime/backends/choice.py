"""Which backend a runtime starts its containers with: ``remotecell serve --backend local|ray``.

``BackendChoice`` is read once, from the command line or the environment (``REMOTECELL_BACKEND``,
``RAY_ADDRESS``, ``REMOTECELL_CONTAINER_BIND``, ``REMOTECELL_CONTAINER_ADDRESS``), and refused there with
a sentence that names the bad value; ``make`` builds the backend it names.  Ray is imported only when the
choice is ``ray`` (``backends/ray.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

BACKENDS = ("local", "ray")
LOOPBACK_BIND = "tcp://127.0.0.1:*"  # the default container socket of a cluster backend: nodes on this host only


class BackendChoiceError(ValueError):
    """A backend option that cannot work; the message names it and what to give instead."""


@dataclass(frozen=True)
class BackendChoice:
    """``name``: "local" (processes on this host) or "ray" (Ray actors on a Ray cluster's nodes).

    For ``ray``: ``ray_address`` (None: Ray's own default, ``RAY_ADDRESS`` or a local Ray started for the
    runtime), ``container_bind`` (the tcp:// address the daemon's container socket binds) and
    ``container_address`` (what containers on other nodes connect to; None: the bound address itself,
    which is right only when every node is on this host).

    Example::

        BackendChoice.read("ray", None, env={"RAY_ADDRESS": "10.0.0.5:6379"}).ray_address == "10.0.0.5:6379"
    """

    name: str = "local"
    ray_address: str | None = None
    container_bind: str = LOOPBACK_BIND
    container_address: str | None = None

    @property
    def same_host(self) -> bool:
        """Whether every container runs on this host (shared memory may carry large buffers to them)."""
        return self.name == "local"

    @classmethod
    def read(cls, name: str | None, ray_address: str | None, container_bind: str | None = None,
             container_address: str | None = None, env: Mapping[str, str] | None = None) -> BackendChoice:
        """The choice from options given (None: not given), else the environment; refused when it cannot work."""
        env = os.environ if env is None else env
        name = (name or env.get("REMOTECELL_BACKEND") or "local").strip().lower()
        if name not in BACKENDS:
            raise BackendChoiceError(f"--backend {name!r} (or REMOTECELL_BACKEND): use one of {', '.join(BACKENDS)}")
        if name == "local":
            return cls()
        bind = container_bind or env.get("REMOTECELL_CONTAINER_BIND") or LOOPBACK_BIND
        address = container_address or env.get("REMOTECELL_CONTAINER_ADDRESS") or None
        for option, value in (("--container-bind", bind), ("--container-address", address)):
            if value is not None and not value.startswith("tcp://"):
                raise BackendChoiceError(f"{option} {value!r}: give tcp://HOST:PORT (containers on other nodes "
                                         "connect back over tcp)")
        if address is None and _wildcard_host(bind):
            raise BackendChoiceError(f"--container-bind {bind!r} listens on every interface: also give "
                                     "--container-address tcp://HOST:PORT, the address the Ray nodes reach this "
                                     "host at (or REMOTECELL_CONTAINER_ADDRESS)")
        return cls(name, ray_address or env.get("RAY_ADDRESS") or None, bind, address)


def _wildcard_host(bind: str) -> bool:
    host = bind.removeprefix("tcp://").rpartition(":")[0]
    return host in ("*", "0.0.0.0", "[::]", "::")
