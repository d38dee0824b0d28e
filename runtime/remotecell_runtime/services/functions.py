"""The registered functions: one pool per definition (by fid), the inputs in flight, and what pools need.

``Functions`` is what every ``Pool`` calls back (the pools' ``Runtime``): it
sends to containers and callers, takes CPUs and GPUs back from idle containers
of other pools, and routes each result to its caller: a socket, or the job
store for spawned inputs (``JOB_PEER``, given to ``job_sink``).  Results that
come in one turn (a container's ``results`` message, a refused ``calls``)
are held in ``batched()`` and go out many to a message.

A fid names one definition for good.  A deployed function keeps its name across
redeploys: ``deployed_fids`` remembers every fid a deployed app has had, so a
caller holding an old one reaches the definition deployed under that name now
(``current_pool``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.base import Backend
from ..backends.choice import BackendChoice
from ..backends.limits import Limits
from ..backends.local import LocalBackend
from ..backends.spares import Spares, find_sandbox
from ..containers import ContainerManager, ContainerRecord, State
from ..cpus import CpuBudget, PlacedCpus, host_cpus
from ..gpus import GpuAllocator, PlacedGpus, inventory
from ..pools import FunctionDef, Peer, Pool, Result
from ..pools.host import Requester
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Frame
from ..protocol.message import encode
from ..protocol.messages.calls import LeaseLostMsg
from ..result_cache import DEFAULT_MAX_MB, ResultCache, max_bytes_from_env
from .app_logs import AppLogs
from .base import Host, Service, refusal
from .registry import AppRegistry

if TYPE_CHECKING:
    from ..images.builder import Images

log = logging.getLogger("remotecell.runtime")

JOB_PEER: Peer = (None, b"jobs")  # results of spawned inputs come here, not to a socket


class JobSink(Protocol):
    """Where results and output of spawned inputs go (the job store)."""

    def on_result(self, result: Result) -> None: ...

    def on_output(self, call_id: str, text: str) -> None: ...


class HeldResults:
    """The results sent inside ``with functions.batched():``, held back to go many to a message per caller.

    One instance, made once (a block costs two calls, not a generator context's dozen); not re-entrant.
    """

    def __init__(self, send_many: Callable[[Peer, list[Result]], None]) -> None:
        self.send_many = send_many
        self.held: dict[Peer, list[Result]] | None = None  # while inside the block

    def __enter__(self) -> None:
        self.held = {}

    def __exit__(self, *exc_info: object) -> None:
        held, self.held = self.held or {}, None
        for peer, results in held.items():
            self.send_many(peer, results)


class Functions(Service):
    def __init__(self, host: Host, apps: AppRegistry, sock_dir: str, shm_prefix: str,
                 client_env: dict[str, str], shares: Sequence[str], blob: Callable[[str], Path],
                 choice: BackendChoice, spares: Spares | None = None) -> None:
        self.host = host
        self.apps = apps
        self.pools: dict[str, Pool] = {}  # fid -> pool
        self.deployed_fids: dict[str, tuple[str, str]] = {}  # every fid a deployed app has had -> (app, name)
        self.input_pool: dict[str, Pool] = {}  # input id -> pool
        self.job_sink: JobSink | None = None
        self.app_logs = AppLogs(host.send_peer)  # what each app's inputs printed (`remotecell app logs`)
        self.gpus = GpuAllocator(inventory()) if choice.same_host else PlacedGpus()
        self.cpus = CpuBudget(host_cpus()) if choice.same_host else PlacedCpus()
        if choice.name != "local":
            self.sandbox, self.sandbox_state = None, RAY_UNSANDBOXED
        elif spares is not None:  # started before the services (``__main__.serve``), with the sandbox found then
            self.sandbox, self.sandbox_state = spares.sandbox, spares.sandbox_state
        else:
            self.sandbox, self.sandbox_state = find_sandbox(sock_dir, host.state_dir, shares)
        self.blob = blob
        self.volume_folder: Callable[[str], Path] | None = None  # a named volume's folder (run_function(volumes=))
        self.limits, self.limits_off = Limits.find(host.runtime_id)
        if self.limits is None:
            log.warning("%s", self.limits_off)
        local = LocalBackend(sock_dir, host.runtime_id, shm_prefix, client_env, self.gpus, self.cpus,
                             self.sandbox, self.limits, spares) if choice.name == "local" else None
        self.spares = local.spares if local is not None else None
        backend: Backend = local or _cluster_backend(choice, host.state_dir, sock_dir)
        self.containers = ContainerManager(backend, self.on_container_exit)
        self._holding = HeldResults(self._send_many)
        self.result_cache = ResultCache(host.state_dir / "cache.db", _cache_cap())
        self.agent_exited: Callable[[ContainerRecord], None] | None = None  # a sandbox's container (no pool)

    # -- the function table -------------------------------------------------------------------

    def add(self, fn: FunctionDef) -> Pool:
        pool = self.pools[fn.fid] = Pool(fn, self)
        return pool

    def retire(self, fid: str) -> None:
        """A new definition replaced ``fid`` (or a redeploy dropped it): its queued inputs still finish."""
        pool = self.pools.get(fid)
        if pool is not None:
            pool.supersede()

    def stop(self, fid: str, reason: str) -> None:
        pool = self.pools.get(fid)
        if pool is not None:
            pool.stop(reason)

    def deployed_pool(self, app_name: str, name: str) -> Pool | None:
        """The pool of function ``name`` as deployed in app ``app_name`` now."""
        app = self.apps.deployed(app_name)
        pool = self.pools.get(app.functions.get(name, "")) if app is not None else None
        return pool if pool is not None and not pool.retired else None

    def current_pool(self, fid: Any) -> Pool | None:
        """The live pool of ``fid``; for a deployed function, that of the definition deployed under its name now."""
        pool = self.pools.get(str(fid))
        if pool is not None and not pool.retired:
            return pool
        owner = self.deployed_fids.get(str(fid))
        return self.deployed_pool(*owner) if owner is not None else None

    def live_pool(self, fid: Any) -> Pool:
        """``current_pool``, or a refusal that says why there is none."""
        pool = self.current_pool(fid)
        if pool is None:
            raise refusal(ErrorName.NOT_FOUND, self.gone(fid))
        return pool

    def gone(self, fid: Any) -> str:
        """Why no pool takes calls of ``fid``, and what to do."""
        owner = self.deployed_fids.get(str(fid))
        if owner is not None:
            return (f"{owner[1]} is not deployed here any more: app {owner[0]!r} was stopped, or its new version "
                    "has no such function. Deploy it again (remotecell deploy FILE.py)")
        return f"function {fid!r} is not registered here (its app stopped, or the runtime restarted)"

    def pool_of(self, container: ContainerRecord) -> Pool | None:
        return self.pools.get(container.fid)

    # -- what pools call back -----------------------------------------------------------------

    def send_peer(self, peer: Peer, frames: list[Frame]) -> None:
        self.host.send_peer(peer, frames)

    def send_container(self, cid: str, frames: list[Frame]) -> None:
        self.host.send_container(cid, frames)

    def send_result(self, peer: Peer, result: Result) -> None:
        """One input's result to its caller: untouched when it came alone, else many to a message."""
        if peer is JOB_PEER:
            if self.job_sink is not None:
                self.job_sink.on_result(result)
        elif self._holding.held is not None:
            self._holding.held.setdefault(peer, []).append(result)
        elif result.frames is not None:
            self.send_peer(peer, result.frames)
        else:
            self.send_peer(peer, framing.encode_many("results", [result.wire_entry()]))

    def batched(self) -> HeldResults:
        """Hold the results sent inside a ``with`` block, then send them many to a message per caller."""
        return self._holding

    def _send_many(self, peer: Peer, results: list[Result]) -> None:
        source = results[0].source
        if source is not None and len(results) == len(source.entries) and all(
                r.source is source for r in results):  # the container's message goes on as it came
            self.send_peer(peer, source.frames)
        elif len(results) == 1 and results[0].frames is not None:
            self.send_peer(peer, results[0].frames)
        else:
            self.send_peer(peer, framing.encode_many("results", [r.wire_entry() for r in results]))

    def input_done(self, input_id: str) -> None:
        self.input_pool.pop(input_id, None)

    def reclaim(self, requester: Requester, holds: Callable[[ContainerRecord], bool]) -> None:
        """A pool waits for GPUs or CPUs (``holds``): stop an idle container of another pool that holds some."""
        self.reclaim_for(requester.fn.name, requester.waiting_reason, holds, but=requester)

    def reclaim_for(self, who: str, why: str, holds: Callable[[ContainerRecord], bool], but: Any = None) -> None:
        """``who`` (a pool's function, a sandbox) waits for what ``holds`` finds: stop an idle container of a pool
        (other than ``but``) that holds some."""
        if any(c.state is State.STOPPING and holds(c) for c in self.containers.all()):
            return  # some are on their way back already
        for pool in self.pools.values():
            holder = pool.scaler.idle_holder(holds) if pool is not but else None
            if holder is not None:
                log.info("stopping idle container %s of %s: %s waits for what it holds (%s)", holder.id,
                         pool.fn.name, who, why)
                pool.scaler.retire(holder)
                return

    def _dispatch_waiting(self, but: Pool | None = None) -> None:
        for pool in list(self.pools.values()):
            if pool is not but and pool.waiting:
                pool.dispatch()

    def on_container_exit(self, container: ContainerRecord) -> None:
        if container.lease is not None:  # its leaseholder hands back the call it may be waiting for
            lost = LeaseLostMsg(fid=container.lease.fid, cid=container.id, cause=container.death_cause())
            self.send_peer(container.lease.peer, encode(lost))
        pool = self.pool_of(container)
        if pool is not None:
            pool.on_exit(container)
        elif self.agent_exited is not None:
            self.agent_exited(container)
        self._dispatch_waiting(but=pool)  # a freed GPU may unblock another pool

    @functools.cached_property
    def images(self) -> Images:
        """The image builder, made at its first use: its machinery (uv, layers, system builds) is ~20 ms of
        imports that the runtime's start does without, and a runtime without images never needs."""
        from ..images.builder import Images

        images = Images(self.host.state_dir, self.blob, self.sandbox is not None, self._dispatch_waiting)
        images.system.volume_folder = self.volume_folder
        return images

    # -- service hooks ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for pool in list(self.pools.values()):
            if self.limits is None:  # else the kernel enforces memory= itself
                pool.scaler.check_memory()
            pool.scaler.scale_down(now)
            pool.scaler.check_startup(now)
            if pool.waiting:  # e.g. waiting for a GPU that an idle container elsewhere holds
                pool.dispatch()
            if pool.retired and pool.empty:
                self.pools.pop(pool.fn.fid, None)

    def session_ended(self, sid: str) -> None:
        """Take back the leases the quiet session held."""
        for container in self.containers.all():
            pool = self.pool_of(container)
            if container.lease is not None and container.lease.sid == sid and pool is not None:
                pool.revoke(container)

    def close(self) -> None:
        if "images" in self.__dict__:  # made (see ``images``): else no build can be running
            self.images.close()
        for pool in list(self.pools.values()):
            pool.stop("the runtime is shutting down")

    async def wait_stopped(self, grace_s: float) -> None:
        """Give the containers ``grace_s`` to exit (after ``close``), then kill the rest."""
        deadline = time.monotonic() + grace_s
        while self.containers.all() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in self.containers.all():
            self.containers.kill(c)

    def stats(self) -> dict[str, Any]:
        """For ``status``: the host's GPUs and CPUs, the pools and the containers."""
        return {
            "gpus": [g.__dict__ for g in self.gpus.gpus],
            "gpus_free": sorted(self.gpus.free),
            "cpus": {"total": self.cpus.total, "reserved": self.cpus.reserved},
            "pools": [p.stats() for p in self.pools.values() if not (p.retired and p.empty)],
            "containers": self.containers.stats(),
            "spares": self.spares.pids() if self.spares is not None else [],
            "sandbox": self.sandbox.describe() if self.sandbox is not None else self.sandbox_state,
            "limits": self.limits.describe if self.limits else self.limits_off,
            "system_images": self.images.system.describe(),
            "cache": self.result_cache.stats(),
        }


RAY_UNSANDBOXED = "off: on the Ray backend containers run as plain processes of their Ray nodes"


def _cache_cap() -> int:
    """The result cache's cap; a bad ``REMOTECELL_CACHE_MAX_MB`` is logged and the default used (no crash)."""
    try:
        return max_bytes_from_env()
    except ValueError as exc:
        log.warning("%s; using the default, %d MiB", exc, DEFAULT_MAX_MB)
        return DEFAULT_MAX_MB << 20


def _cluster_backend(choice: BackendChoice, state_dir: Path, sock_dir: str) -> Backend:
    """The Ray backend (ray is imported only now), given the daemon's public key for its containers and its
    private socket folder (for the direct sockets of containers Ray places on this host)."""
    from ..auth import server_keys
    from ..backends.ray import RayBackend

    return RayBackend(choice, server_keys(state_dir).public.decode(), sock_dir)


def drop_inputs_of(functions: Functions, peers: set[Peer]) -> int:
    """Cancel every input that callers at ``peers`` sent (a revoked client's: the daemon sends them nothing
    more, so nobody hears of it); how many."""
    dropped = 0
    for pool in list(functions.pools.values()):
        for inp in [i for i in pool.inputs.values() if i.peer in peers]:
            pool.cancel(inp.id)
            dropped += 1
    return dropped


def scheduled_pool(functions: Functions, app_ref: str, name: str) -> Pool | None:
    """The pool a schedule fires into: ``name`` of deployed app ``app_ref``, else of the (ephemeral) app whose id
    it is."""
    pool = functions.deployed_pool(app_ref, name)
    if pool is not None:
        return pool
    app = functions.apps.get(app_ref)
    pool = functions.pools.get(app.functions.get(name, "")) if app is not None else None
    return pool if pool is not None and not pool.retired else None
