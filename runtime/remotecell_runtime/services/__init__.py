"""The runtime's services, each owning one kind of work, and how they are put together.

``build`` makes them for one ``Host`` (the daemon) and ``Services`` gives the
daemon what it routes by: one table of client handlers and one of container
handlers, keyed by message class, each message type owned by exactly one
service (a clash fails at start).  The order of ``Services.all`` is the order of closing: the scheduler
first (no slot fires into a closing job store), the pools last.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..backends.choice import BackendChoice
from ..backends.spares import Spares
from ..protocol.image_spec import ImageSpec
from ..protocol.message import Message
from .apps import Apps
from .base import ContainerHandler, Handler, Host, Service
from .blobs import Blobs
from .calls import Calls
from .debug import Debugger
from .functions import Functions, scheduled_pool
from .images import ImageBuilds
from .jobs import Jobs, SpawnedCalls
from .kv import Stores
from .queues import Queues
from .registry import AppRegistry, DeployStore
from .sandboxes import Sandboxes
from .schedules import Scheduler
from .status import Status
from .volume_files import VolumeFiles
from .volumes import Volumes
from .web import BODY_LIMIT_BYTES, Gateway

H = TypeVar("H")


@dataclass
class Services:
    functions: Functions
    apps: Apps
    scheduler: Scheduler
    blobs: Blobs  # what an image's builder reads its local files from
    gateway: Gateway  # the web endpoints' HTTP port
    all: list[Service]

    def handlers(self) -> dict[str, tuple[type[Message], Handler]]:
        """Client message type -> its class and its handler."""
        return _merged([s.handlers() for s in self.all])

    def container_handlers(self) -> dict[str, tuple[type[Message], ContainerHandler]]:
        return _merged([s.container_handlers() for s in self.all])

    def __post_init__(self) -> None:
        # ``drained`` runs after every read of a socket: only the services that have one are asked.
        self._drainers = [s.drained for s in self.all if type(s).drained is not Service.drained]

    def drained(self) -> None:
        for drained in self._drainers:
            drained()

    def start(self) -> None:
        """Register the deployed apps again, then let the schedules fire."""
        self.apps.restore_deployed()
        self.scheduler.start()
        self.gateway.start()

    def close(self) -> None:
        for service in self.all:
            service.close()


def _merged(tables: list[dict[type[Message], H]]) -> dict[str, tuple[type[Message], H]]:
    """One table by type name, for routing a decoded header before it is read as its class."""
    merged: dict[str, tuple[type[Message], H]] = {}
    for table in tables:
        for cls, handler in table.items():
            if cls.TYPE in merged:
                raise RuntimeError(f"message type {cls.TYPE!r} has two handlers ({merged[cls.TYPE][0].__name__}, "
                                   f"{cls.__name__})")
            merged[cls.TYPE] = (cls, handler)
    return merged


def build(host: Host, sock_dir: str, shm_prefix: str, client_env: dict[str, str], retention_s: float,
          orphan_grace_s: float, shares: Sequence[str] = (), web_bind: str | None = None,
          web_max_body: int | None = None, web_public: bool = False,
          backend: BackendChoice | None = None, spares: Spares | None = None) -> Services:
    """Every service of one runtime, wired to ``host`` and to each other; ``shares``: folders every
    sandboxed container sees (``remotecell serve --share``)."""
    registry = AppRegistry()
    blobs = Blobs(host)
    functions = Functions(host, registry, sock_dir, shm_prefix, client_env, shares, blobs.path,
                          backend or BackendChoice(), spares)
    jobs = Jobs(functions, host.state_dir, retention_s, orphan_grace_s=orphan_grace_s)
    volumes = Volumes(host, orphan_grace_s=orphan_grace_s)
    functions.volume_folder = lambda name: volumes.named(name).folder
    stores = Stores(host, orphan_grace_s=orphan_grace_s)
    queues = Queues(stores)
    store = DeployStore(host.state_dir / "deployed.db")
    scheduler = Scheduler(store.db, jobs, functools.partial(scheduled_pool, functions))
    apps = Apps(host, registry, store, functions, jobs, scheduler, volumes)
    sandboxes = Sandboxes(host, functions, apps, Path(sock_dir))
    gateway = Gateway(functions, web_bind, BODY_LIMIT_BYTES if web_max_body is None else web_max_body, web_public)
    apps.gateway = gateway
    status = Status(host, functions, apps, queues, sandboxes, gateway)
    image_builds = ImageBuilds(host, functions, functools.partial(_live_images, functions, sandboxes))
    # Closing order: the web gateway (no new requests), schedules, stores, jobs, deployed apps, sandboxes, the pools.
    ordered: list[Service] = [gateway, scheduler, stores, queues, SpawnedCalls(jobs), apps, volumes,
                              VolumeFiles(host, volumes), blobs, image_builds, status,
                              sandboxes, sandboxes.streams, Debugger(host, functions), Calls(functions), functions]
    return Services(functions, apps, scheduler, blobs, gateway, ordered)


def _live_images(functions: Functions, sandboxes: Sandboxes) -> list[ImageSpec]:
    """The images in use: every registered function's (deployed ones among them) and every running sandbox's."""
    specs = [pool.fn.opts.image for pool in functions.pools.values()]
    specs += [record.options.image for record in sandboxes.sandboxes.values() if not record.finished]
    return [spec for spec in specs if spec is not None]
