"""The daemon: sockets, the event loop and the table of message handlers.

Clients talk to a ROUTER (ipc:// in a 0700 directory, and tcp:// behind CURVE
and a ZAP allowlist); containers talk to a second ROUTER on ipc://.  Every
message is decoded (header only) and handed to the handler for its type; a
bad message gets an error reply and is logged, and the loop goes on.  Payload
frames pass through untouched: the daemon never unpickles user data.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from . import auth, vault
from .apps import App, AppRegistry, DeployStore, SavedFunction
from .backends.base import SpecRefused
from .backends.local import LocalBackend
from .containers import ContainerManager, ContainerRecord, State
from .cpus import CpuBudget, host_cpus
from .gpus import GpuAllocator, inventory
from .images import ImageError, Images, packages_of
from .jobs import JOB_PEER, RETENTION_S, Jobs
from .kv import Stores
from .pools import CANCEL_GRACE_S, FunctionDef, Input, Peer, Pool, Result, ResultMessage, error_result
from .protocol import framing, sharedmem
from .protocol.errors import ErrorName
from .protocol.framing import Frame, Payload, WireError
from .protocol.versions import versions
from .scheduler import Scheduler, check_spec
from .volumes import VolumeError, Volumes

log = logging.getLogger("remotecell.runtime")

VOLUMES_ENV = "REMOTECELL_VOLUMES"  # a container's volume links: {absolute path: host folder}, as JSON
HEARTBEAT_TIMEOUT_S = float(os.environ.get("REMOTECELL_HEARTBEAT_TIMEOUT_S", "30"))
TICK_S = 0.5
JOBS_TICK_S = 5.0


@dataclass
class Request:
    """One client message: who sent it, its header, its payloads and its raw frames."""

    peer: Peer
    header: dict[str, Any]
    payloads: list[Payload]
    frames: list[Frame]  # without the routing identity: ready to forward


Handler = Callable[[Request], "dict[str, Any] | None"]


class RequestError(Exception):
    """A request the daemon refuses; travels back by name (``type_name``) with its message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


@dataclass
class Session:
    sid: str
    last_seen: float = field(default_factory=time.monotonic)


class Listener:
    """A zmq socket driven by the event loop's reader callbacks (no per-message futures)."""

    def __init__(self, sock: zmq.Socket, on_message: Callable[[Listener, list[Frame]], None], shm: bool,
                 local: bool = True) -> None:
        self.sock = sock
        self.on_message = on_message
        self.shm = shm  # peers here share our host: large buffers may go through shared memory
        self.local = local  # peers here reach our private socket folder (ipc://): they may hold leases
        self._drain_scheduled = False
        self.loop = asyncio.get_running_loop()
        self.fd = int(sock.getsockopt(zmq.FD))
        self.loop.add_reader(self.fd, self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        sock = self.sock
        # Checking EVENTS is cheaper than a recv that raises zmq.Again.
        for _ in range(1000):  # yield to other work now and then under a flood
            if not int(sock.get(zmq.EVENTS)) & zmq.POLLIN:
                return
            self.on_message(self, framing.recv(sock, zmq.NOBLOCK))
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def send(self, identity: bytes, frames: list[Frame]) -> bool:
        try:
            framing.send(self.sock, [identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: that peer is gone
            log.debug("could not send to %r: %s", identity, exc)
            return False
        finally:
            # A send can consume the FD's edge: if input is queued, read it.
            if int(self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
                self._schedule_drain()
        return True

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.sock.close(linger=0)


class Daemon:
    def __init__(self, state_dir: Path, binds: list[str], retention_s: float = RETENTION_S) -> None:
        self.state_dir = state_dir
        self.retention_s = retention_s
        self.binds = binds or [f"ipc://{self.sock_dir / 'runtime.sock'}"]
        self.runtime_id = secrets.token_hex(4)
        self.shm_prefix = f"rc-{self.runtime_id}"
        self.ctx = zmq.Context()
        self.listeners: list[Listener] = []
        self.apps = AppRegistry()
        self.sessions: dict[str, Session] = {}
        self.pools: dict[str, Pool] = {}  # fid -> pool
        # Every fid a deployed app has had -> (app name, function name): callers that hold an old one
        # (a redeploy, a stop and a new deploy) reach the definition deployed under that name now.
        self.deployed_fids: dict[str, tuple[str, str]] = {}
        self.input_pool: dict[str, Pool] = {}  # input id -> pool
        self.gpus = GpuAllocator(inventory())
        self.cpus = CpuBudget(host_cpus())
        self.stopped = asyncio.Event()
        self.authenticator: Any = None
        self.handlers: dict[str, Handler] = {
            "hello": self.on_hello,
            "ping": self.on_ping,
            "app_create": self.on_app_create,
            "app_stop": self.on_app_stop,
            "fn_register": self.on_fn_register,
            "fn_lookup": self.on_fn_lookup,
            "call": self.on_call,
            "calls": self.on_calls,
            "cancel": self.on_cancel,
            "spawn": self.on_spawn,
            "call_get": self.on_call_get,
            "call_status": self.on_call_status,
            "call_cancel": self.on_call_cancel,
            "call_logs": self.on_call_logs,
            "calls_recent": self.on_calls_recent,
            "lease_return": self.on_lease_return,
            "volume_ls": self.on_volume_ls,
            "volume_read": self.on_volume_read,
            "status": self.on_status,
            "shutdown": self.on_shutdown,
        }
        self.container_handlers: dict[str, Callable[[ContainerRecord, dict[str, Any], list[Frame]], None]] = {
            "hello": self.on_container_hello,
            "ready": self.on_container_ready,
            "load_failed": self.on_container_load_failed,
            "output": self.on_container_output,
            "item": self.on_container_output,  # what a generator yields, routed like its output
            "result": self.on_container_result,
            "results": self.on_container_results,
            "released": self.on_container_released,
            "lease_used": self.on_container_lease_used,
        }
        self._held: dict[Peer, list[Result]] | None = None  # results held back to go many to a message

    @property
    def sock_dir(self) -> Path:
        return self.state_dir / "sock"

    # -- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        auth.ensure_private_dir(self.state_dir)
        auth.ensure_private_dir(self.sock_dir)
        self.jobs = Jobs(self, self.state_dir, self.retention_s, orphan_grace_s=HEARTBEAT_TIMEOUT_S)
        self.images = Images(self.state_dir, self._image_built)
        self.volumes = Volumes(self.state_dir)
        self.stores = Stores(self.state_dir, orphan_grace_s=HEARTBEAT_TIMEOUT_S)
        self.handlers.update(self.stores.handlers)  # Dict and Queue messages: see kv.py
        keys = auth.server_keys(self.state_dir)
        tcp = [b for b in self.binds if b.startswith("tcp://")]
        if tcp:
            self._start_authenticator()
        for address in self.binds:
            self.listeners.append(self._bind_client(address, keys))
        backend = LocalBackend(str(self.sock_dir), self.runtime_id, self.shm_prefix, self._client_env(),
                               self.gpus, self.cpus)
        csock = self.ctx.socket(zmq.ROUTER)
        csock.router_mandatory = True
        csock.sndhwm = csock.rcvhwm = 0
        csock.bind(backend.connect_back.bind)
        self.container_listener = Listener(csock, self.on_container_message, shm=backend.connect_back.same_host)
        self.containers = ContainerManager(backend, self.on_container_exit)
        self.deployed = DeployStore(self.state_dir / "deployed.db")
        self.scheduler = Scheduler(self.deployed.db, self.jobs, self._deployed_pool)
        self.handlers.update(self.scheduler.handlers)  # schedule messages: see scheduler.py
        self._restore_deployed()
        self.scheduler.start()
        self.ticker = asyncio.ensure_future(self._tick())
        self._write_connection_file(keys)
        log.info("remotecell runtime %s serving on %s", self.runtime_id, ", ".join(self.endpoints))

    def _start_authenticator(self) -> None:
        if not auth.authorized_keys(self.state_dir):
            raise auth.KeySetupError(
                "refusing to listen on tcp:// without client keys: create one with "
                f"`remotecell token new NAME --state-dir {self.state_dir}` and give the client its file"
            )
        from zmq.auth.asyncio import AsyncioAuthenticator

        self.authenticator = AsyncioAuthenticator(self.ctx)
        self.authenticator.start()
        self._reload_keys()

    def _reload_keys(self) -> None:
        adir = auth.authorized_dir(self.state_dir)
        self._keys_mtime = adir.stat().st_mtime_ns if adir.exists() else 0
        self.authenticator.configure_curve(domain="*", location=str(adir))

    def _bind_client(self, address: str, keys: auth.ServerKeys) -> Listener:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.router_mandatory = True
        sock.sndhwm = sock.rcvhwm = 0
        is_tcp = address.startswith("tcp://")
        if is_tcp:
            auth.apply_curve_server(sock, keys)
        elif not address.startswith("ipc://"):
            raise ValueError(f"--bind {address!r}: use ipc://PATH or tcp://HOST:PORT")
        sock.bind(address)
        if not is_tcp:
            os.chmod(address.removeprefix("ipc://"), 0o600)
        shm = not is_tcp and sharedmem.ShmPool.available()
        return Listener(sock, self.on_client_message, shm=shm, local=not is_tcp)

    def _client_env(self) -> dict[str, str]:
        """What a container's own client needs to reach this runtime (for Dicts, Queues, calls), never another."""
        local = [e for e in self.endpoints if e.startswith("ipc://")]
        return {"REMOTECELL_HOME": str(self.state_dir),
                "REMOTECELL_RUNTIME": local[0] if local else str(self.state_dir / "connection.json")}

    @property
    def endpoints(self) -> list[str]:
        return [lst.sock.getsockopt_string(zmq.LAST_ENDPOINT) for lst in self.listeners]

    def _write_connection_file(self, keys: auth.ServerKeys) -> None:
        info = {
            "endpoints": self.endpoints,
            "server_key": keys.public.decode(),
            "pid": os.getpid(),
            "runtime_id": self.runtime_id,
            "state_dir": str(self.state_dir),
            "versions": versions(),
        }
        auth.write_private_json(self.state_dir / "connection.json", info)

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        try:
            await self.stopped.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        self.scheduler.close()  # no slot fires into a closing job store
        self.stores.close()
        self.jobs.close()  # unfinished spawned calls stay in the store and run again after a restart
        self.deployed.close()
        for pool in list(self.pools.values()):
            pool.stop("the runtime is shutting down")
        deadline = time.monotonic() + 3
        while self.containers.all() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in self.containers.all():
            self.containers.kill(c)
        self.ticker.cancel()
        for lst in [*self.listeners, self.container_listener]:
            lst.close()
        if self.authenticator is not None:
            self.authenticator.stop()
        (self.state_dir / "connection.json").unlink(missing_ok=True)
        sharedmem.sweep_segments(self.shm_prefix)
        self.ctx.term()
        log.info("remotecell runtime %s stopped", self.runtime_id)

    async def _tick(self) -> None:
        jobs_tick = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._expire_sessions()
                now = time.monotonic()
                if now - jobs_tick >= JOBS_TICK_S:
                    jobs_tick = now
                    self.jobs.tick(now)
                    self.stores.tick(now, set(self.sessions))
                for pool in list(self.pools.values()):
                    pool.check_memory()
                    pool.scale_down(now)
                    if pool.waiting:  # e.g. waiting for a GPU that an idle container elsewhere holds
                        pool.dispatch()
                    if pool.retired and pool.empty:
                        self.pools.pop(pool.fn.fid, None)
                if self.authenticator is not None:
                    adir = auth.authorized_dir(self.state_dir)
                    if adir.exists() and adir.stat().st_mtime_ns != self._keys_mtime:
                        self._reload_keys()
            except Exception:
                log.exception("periodic work failed")

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            if now - session.last_seen > HEARTBEAT_TIMEOUT_S:
                del self.sessions[sid]
                for app in self.apps.ephemeral_of(sid):
                    log.info("client %s went quiet: stopping its ephemeral app %s", sid, app.name)
                    self.stop_app(app, f"app {app.name!r} stopped: its client stopped sending heartbeats")
                for container in self.containers.all():
                    pool = self._pool_of(container)
                    if container.lease is not None and container.lease.sid == sid and pool is not None:
                        pool.revoke(container)

    # -- client messages ----------------------------------------------------------------------

    def on_client_message(self, listener: Listener, frames: list[Frame]) -> None:
        identity = frames[0].bytes
        peer: Peer = (listener, identity)
        request_id = None
        try:
            header = framing.decode_header(frames[1:])
            request_id = header.get("id")
            payloads = framing.split_payloads(header, frames[3:])
            if not listener.shm and (header.get("shm") or any(p.shm for p in payloads)):
                raise RequestError(ErrorName.INVALID, "shared memory is only for clients on the runtime's host")
            self._seen(header.get("sid"))
            handler = self.handlers.get(header["t"])
            if handler is None:
                raise RequestError(ErrorName.INVALID, f"unknown message type {header['t']!r}")
            reply = handler(Request(peer, header, payloads, frames[1:]))
        except (WireError, RequestError, KeyError, TypeError, ValueError) as exc:
            self._refuse(peer, request_id, exc)
            return
        except Exception as exc:
            log.exception("handler failed")
            self._refuse(peer, request_id, exc)
            return
        if reply is not None:
            reply.setdefault("t", "reply")
            reply["id"] = request_id
            self.send_peer(peer, framing.encode(reply))

    def _seen(self, sid: Any) -> None:
        if not isinstance(sid, str):
            return
        session = self.sessions.get(sid)
        if session is None:
            session = self.sessions[sid] = Session(sid)
        session.last_seen = time.monotonic()

    def _refuse(self, peer: Peer, request_id: Any, exc: Exception) -> None:
        type_name = getattr(exc, "type_name", ErrorName.INVALID)
        message = str(exc) if not isinstance(exc, KeyError) else f"missing field {exc}"
        log.warning("refused a message from %r: %s", peer[1], message)
        error = {"type": type_name, "message": message, "traceback": ""}
        self.send_peer(peer, framing.encode({"t": "error", "id": request_id, "error": error}))

    def send_peer(self, peer: Peer, frames: list[Frame]) -> None:
        listener, identity = peer
        listener.send(identity, frames)

    def send_result(self, peer: Peer, result: Result) -> None:
        """One input's result to its caller: untouched when it came alone, else many to a message."""
        if peer is JOB_PEER:
            self.jobs.on_result(result)
        elif self._held is not None:
            self._held.setdefault(peer, []).append(result)
        elif result.frames is not None:
            self.send_peer(peer, result.frames)
        else:
            self.send_peer(peer, framing.encode_many("results", [(result.header, result.payloads)]))

    def _send_held(self) -> None:
        held, self._held = self._held or {}, None
        for peer, results in held.items():
            source = results[0].source
            if source is not None and len(results) == len(source.entries) and all(
                    r.source is source for r in results):  # the container's message goes on as it came
                self.send_peer(peer, source.frames)
            elif len(results) == 1 and results[0].frames is not None:
                self.send_peer(peer, results[0].frames)
            else:
                self.send_peer(peer, framing.encode_many("results", [(r.header, r.payloads) for r in results]))

    def send_container(self, cid: str, frames: list[Frame]) -> None:
        self.container_listener.send(cid.encode(), frames)

    def reclaim(self, requester: Pool, holds: Callable[[ContainerRecord], bool]) -> None:
        """A pool waits for GPUs or CPUs (``holds``): stop an idle container of another pool that holds some."""
        if any(c.state is State.STOPPING and holds(c) for c in self.containers.all()):
            return  # some are on their way back already
        for pool in self.pools.values():
            holder = pool.idle_holder(holds) if pool is not requester else None
            if holder is not None:
                log.info("stopping idle container %s of %s: %s waits for what it holds (%s)", holder.id,
                         pool.fn.name, requester.fn.name, requester.waiting_reason)
                pool.retire(holder)
                return

    def input_done(self, input_id: str) -> None:
        self.input_pool.pop(input_id, None)

    def on_hello(self, req: Request) -> dict[str, Any]:
        return {"versions": versions(), "runtime_id": self.runtime_id, "shm": req.peer[0].shm,
                "gpus": self.gpus.describe()}

    def on_ping(self, req: Request) -> dict[str, Any]:
        return {"t": "pong", "runtime_id": self.runtime_id}

    def on_app_create(self, req: Request) -> dict[str, Any]:
        mode = req.header.get("mode", "ephemeral")
        name, sid = str(req.header["name"]), str(req.header["sid"])
        if mode == "deployed":
            return {"app_id": self._deploy(name, sid, req.header.get("functions")).app_id}
        if mode != "ephemeral":
            raise RequestError(ErrorName.INVALID, f"app mode {mode!r} must be 'ephemeral' or 'deployed'")
        return {"app_id": self.apps.create(name, sid, mode).app_id}

    def _deploy(self, name: str, sid: str, functions: Any) -> App:
        """The deployed app ``name``, made if new; a redeploy keeps only the functions it names.

        The functions it keeps are replaced as they are registered again; queued and
        running inputs of a replaced or dropped definition finish on its old pool.
        """
        app = self.apps.deployed(name)
        if app is None:
            app = self.apps.create(name, sid, "deployed")
            self.deployed.save_app(app)
            return app
        if isinstance(functions, list):
            for dropped in set(app.functions) - {str(f) for f in functions}:
                self._retire(app.functions.pop(dropped))
                self.deployed.drop_function(name, dropped)
                self.scheduler.remove(name, dropped)
        return app

    def _retire(self, fid: str) -> None:
        pool = self.pools.get(fid)
        if pool is not None:
            pool.supersede()

    def _app(self, app_id: Any) -> App:
        app = self.apps.get(app_id)
        if app is None:
            raise RequestError(ErrorName.NOT_FOUND,
                               f"no app with id {app_id!r} (it was stopped, or the runtime restarted)")
        return app

    def _deployed_app(self, name: Any) -> App:
        app = self.apps.deployed(str(name))
        if app is None:
            known = ", ".join(self.apps.deployed_names()) or "none"
            raise RequestError(ErrorName.NOT_FOUND,
                               f"no deployed app named {name!r} on this runtime (deployed: {known}); "
                               "deploy it with `remotecell deploy FILE.py` or app.deploy()")
        return app

    def on_app_stop(self, req: Request) -> dict[str, Any]:
        """Stop an app by ``app_id``, or a deployed one by ``name``."""
        if "name" in req.header:
            app = self._deployed_app(req.header["name"])
        else:
            app = self._app(req.header["app_id"])
        self.stop_app(app, f"app {app.name!r} was stopped")
        return {}

    def stop_app(self, app: App, reason: str) -> None:
        self.apps.remove(app.app_id)
        if app.mode == "deployed":
            self.deployed.drop_app(app.name)
            self.scheduler.remove_app(app.name)
        for fid in app.functions.values():
            pool = self.pools.get(fid)
            if pool is not None:
                pool.stop(reason)

    def on_fn_register(self, req: Request) -> dict[str, Any]:
        app = self._app(req.header["app_id"])
        if len(req.payloads) != 1:
            raise RequestError(ErrorName.INVALID, "fn_register needs exactly one payload: the function body")
        body = Payload([bytes(framing.buffer_of(f)) for f in req.payloads[0].frames])
        meta = req.header.get("meta") or {}
        fn = SavedFunction(str(req.header["name"]), req.header.get("options", {}), meta, body)
        return {"fid": self._register(app, fn)}

    def _check_host(self, options: dict[str, Any]) -> dict[str, str]:
        """Refuse what this host cannot give a definition (its GPUs, its image); its containers' variables."""
        try:
            self.containers.check(options)
        except SpecRefused as exc:
            raise RequestError(ErrorName.INVALID, str(exc)) from None
        if options.get("schedule") is not None:
            check_spec(options["schedule"])
        if options.get("image"):
            try:
                packages_of(options["image"])
            except ImageError as exc:
                raise RequestError(ErrorName.INVALID, str(exc)) from None
        return self._environment(options)

    def _register(self, app: App, fn: SavedFunction) -> str:
        """Make ``fn`` the app's current definition of its name (a new pool, unless it is the same one)."""
        env = self._check_host(fn.options)
        digest = hashlib.sha256(b"".join(fn.body.frames) + repr(sorted(fn.options.items())).encode()).hexdigest()[:16]
        fid = f"fn-{app.app_id}-{fn.name}-{digest}"
        old = app.functions.get(fn.name)
        if old == fid:
            return fid
        deployed = app.mode == "deployed"
        if old is not None:  # a new definition replaces the old one; its queued inputs still finish
            self._retire(old)
        # A deployed function's key outlives its deploying client: spawned calls come back after a restart.
        owner = "deployed" if deployed else app.sid
        pool = self.pools[fid] = Pool(FunctionDef(fid, app.app_id, fn.name, fn.options, fn.body,
                                                  f"{owner}:{app.name}:{fn.name}:{digest}", env, fn.meta), self)
        app.functions[fn.name] = fid
        if deployed:
            self.deployed_fids[fid] = (app.name, fn.name)
            self.deployed.save_function(app.name, fn)
            self.scheduler.sync(app.name, fn.name, fn.options.get("schedule"))
        pool.scale()
        self.jobs.adopt(pool)
        return fid

    def _restore_deployed(self) -> None:
        """Register the deployed apps saved by an earlier run of the runtime (same app ids, same fids)."""
        for saved in self.deployed.load():
            app = self.apps.create(saved.name, "", "deployed", saved.app_id, saved.created_at)
            for fn in saved.functions:
                try:
                    self._register(app, fn)
                except RequestError as exc:  # e.g. the GPUs it asks for are not here any more
                    log.warning("could not restore %s of deployed app %s: %s", fn.name, app.name, exc)
            log.info("restored deployed app %s (%d functions)", app.name, len(app.functions))

    def on_fn_lookup(self, req: Request) -> dict[str, Any]:
        """A deployed function or class by app and function name: its fid and what a caller needs to know."""
        app = self._deployed_app(req.header["app"])
        name = str(req.header["name"])
        pool = self.pools.get(app.functions.get(name, ""))
        if pool is None:
            has = ", ".join(sorted(app.functions)) or "nothing"
            raise RequestError(ErrorName.NOT_FOUND, f"deployed app {app.name!r} has no function or class {name!r} "
                               f"(it has: {has})")
        return {"fid": pool.fn.fid, "options": pool.fn.options, "meta": pool.fn.meta}

    def _deployed_pool(self, app_name: str, name: str) -> Pool | None:
        """The pool of function ``name`` as deployed in app ``app_name`` now."""
        app = self.apps.deployed(app_name)
        pool = self.pools.get(app.functions.get(name, "")) if app is not None else None
        return pool if pool is not None and not pool.retired else None

    def _current_pool(self, fid: Any) -> Pool | None:
        """The live pool of ``fid``; for a deployed function, that of the definition deployed under its name now."""
        pool = self.pools.get(str(fid))
        if pool is not None and not pool.retired:
            return pool
        owner = self.deployed_fids.get(str(fid))
        return self._deployed_pool(*owner) if owner is not None else None

    def _gone(self, fid: Any) -> str:
        """Why no pool takes calls of ``fid``, and what to do."""
        owner = self.deployed_fids.get(str(fid))
        if owner is not None:
            return (f"{owner[1]} is not deployed here any more: app {owner[0]!r} was stopped, or its new version "
                    "has no such function. Deploy it again (remotecell deploy FILE.py)")
        return f"function {fid!r} is not registered here (its app stopped, or the runtime restarted)"

    def _image_built(self) -> None:
        for pool in list(self.pools.values()):
            if pool.waiting:
                pool.dispatch()

    def _environment(self, options: dict[str, Any]) -> dict[str, str]:
        """A function's containers' variables: its ``env``, then its secrets (named ones read here),
        and where its volumes are (``REMOTECELL_VOLUMES``: the container links them before loading)."""
        env = {str(k): str(v) for k, v in (options.get("env") or {}).items()}
        try:
            env.update(vault.environment(self.state_dir, options.get("secrets")))
        except vault.SecretNotFound as exc:
            raise RequestError(ErrorName.NOT_FOUND, str(exc)) from None
        except vault.SecretError as exc:
            raise RequestError(ErrorName.INVALID, str(exc)) from None
        if options.get("volumes"):
            env[VOLUMES_ENV] = json.dumps(self._volume(lambda: self.volumes.mounts(options["volumes"])))
        return env

    def on_volume_ls(self, req: Request) -> dict[str, Any]:
        h = req.header
        return {"entries": self._volume(lambda: self.volumes.listdir(h.get("name"), bool(h.get("create")),
                                                                     h.get("path")))}

    def on_volume_read(self, req: Request) -> None:
        h = req.header
        data = self._volume(lambda: self.volumes.read(h.get("name"), bool(h.get("create")), h.get("path")))
        self.send_peer(req.peer, framing.encode({"t": "reply", "id": h.get("id"), "size": len(data)},
                                              [Payload([data])]))

    @staticmethod
    def _volume(work: Callable[[], Any]) -> Any:
        try:
            return work()
        except VolumeError as exc:
            raise RequestError(ErrorName.NOT_FOUND if exc.missing else ErrorName.INVALID, str(exc)) from None
        except OSError as exc:
            raise RequestError(ErrorName.INVALID, f"volume: {exc}") from None

    def on_call(self, req: Request) -> None:
        input_id = str(req.header["id"])
        if len(req.payloads) != 1:
            raise RequestError(ErrorName.INVALID, f"call {input_id!r}: needs exactly one payload, the arguments")
        method = req.header.get("m")
        inp = Input(input_id, req.peer, req.payloads[0], req.frames, method, bool(req.header.get("shm")))
        if req.header.get("lease") and req.peer[0].local:
            inp.lease = str(req.header.get("sid", ""))
        self._submit(req, [inp])

    def on_calls(self, req: Request) -> None:
        """Many inputs of one function in one message: ``e`` lists them, one payload each."""
        method, shm = req.header.get("m"), bool(req.header.get("shm"))
        inputs = []
        for entry, payloads in framing.split_many(req.header, req.payloads):
            if len(payloads) != 1:
                raise RequestError(ErrorName.INVALID, f"call {entry['id']!r}: needs exactly one payload, the arguments")
            inputs.append(Input(entry["id"], req.peer, payloads[0], None, method, shm))
        self._submit(req, inputs)

    def _submit(self, req: Request, inputs: list[Input]) -> None:
        pool = self._current_pool(req.header.get("fid", ""))
        fresh = []
        for inp in inputs:
            known = self.input_pool.get(inp.id)
            if known is None:
                fresh.append(inp)
            else:  # resent (after a reconnect): it runs once, and answers the socket that asked last
                sharedmem.discard([inp.payload])
                if inp.id in known.inputs:
                    known.inputs[inp.id].peer = req.peer
        if pool is None:
            sharedmem.discard(req.payloads)
            msg = self._gone(req.header.get("fid"))
            self._held = {}
            for inp in fresh:
                self.send_result(req.peer, error_result(inp.id, ErrorName.NOT_FOUND, msg))
            self._send_held()
            return
        for inp in fresh:
            self.input_pool[inp.id] = pool
            if pool.fn.fid != req.header.get("fid"):
                inp.called_as = str(req.header.get("fid"))  # a lease, if any, is granted under the fid it holds
        pool.submit(*fresh)

    def _live_pool(self, fid: Any) -> Pool:
        pool = self._current_pool(fid)
        if pool is None:
            raise RequestError(ErrorName.NOT_FOUND, self._gone(fid))
        return pool

    def on_spawn(self, req: Request) -> None:
        """Spawned calls (``e`` lists them, one payload each): saved to the job store, then run."""
        pool = self._live_pool(req.header.get("fid"))
        entries = framing.split_many(req.header, req.payloads)
        if any(len(payloads) != 1 or payloads[0].shm for _, payloads in entries):
            raise RequestError(ErrorName.INVALID,
                               "a spawned call needs one payload, its arguments, without shared memory")
        self.jobs.spawn(req.peer, str(req.header["id"]), pool, entries, req.header.get("m"))

    def on_call_get(self, req: Request) -> dict[str, Any] | None:
        timeout_s = min(max(float(req.header.get("timeout_s", 0)), 0.0), 60.0)
        return self.jobs.get(req.peer, str(req.header["id"]), str(req.header["call"]), timeout_s)

    def on_call_status(self, req: Request) -> dict[str, Any]:
        if "group" in req.header:
            return {"counts": self.jobs.group_status(str(req.header["group"]))}
        return self.jobs.status(str(req.header["call"]))

    def on_call_cancel(self, req: Request) -> dict[str, Any]:
        ids = [str(i) for i in req.header.get("calls", [])]
        if "group" in req.header:
            ids += self.jobs.group_ids(str(req.header["group"]))
        return {"cancelled": self.jobs.cancel(ids)}

    def on_call_logs(self, req: Request) -> dict[str, Any]:
        return {"text": self.jobs.logs(str(req.header["call"]))}

    def on_calls_recent(self, req: Request) -> dict[str, Any]:
        """The latest spawned calls and their states, for the JupyterLab panel (``limit``: how many)."""
        limit = req.header.get("limit", 50)
        if type(limit) is not int or limit < 1:
            raise RequestError(ErrorName.INVALID, f"calls_recent: limit must be a positive integer, not {limit!r}")
        return {"calls": self.jobs.recent(limit)}

    def on_lease_return(self, req: Request) -> None:
        """A call made under a lease that ended badly there (see ``Pool.adopt``): it goes on as a plain input."""
        input_id, why = str(req.header["id"]), req.header.get("why")
        if len(req.payloads) != 1 or why not in ("timeout", "crash", "error"):
            raise RequestError(ErrorName.INVALID, f"lease_return {input_id!r}: needs why=timeout|crash|error "
                               "and one payload, the arguments")
        if input_id in self.input_pool:  # resent: it runs once
            sharedmem.discard(req.payloads)
            return
        inp = Input(input_id, req.peer, req.payloads[0], None, req.header.get("m"), bool(req.header.get("shm")))
        pool = self._live_pool(req.header.get("fid"))
        self.input_pool[input_id] = pool
        pool.adopt(inp, str(why), str(req.header.get("cid", "")), str(req.header.get("cause", "")),
                   req.header.get("error"))

    def on_cancel(self, req: Request) -> None:
        for input_id in req.header.get("ids", []):
            pool = self.input_pool.get(input_id)
            if pool is not None:
                pool.cancel(input_id)
            else:
                self._cancel_leased(req, str(input_id))
        return None

    def _cancel_leased(self, req: Request, input_id: str) -> None:
        """A call its caller sent straight to a leased container: interrupt it there and take the lease back."""
        container = self.containers.containers.get(str(req.header.get("cid", "")))
        pool = self._pool_of(container) if container is not None else None
        if container is None or pool is None or container.lease is None or container.lease.peer != req.peer:
            return
        self.containers.cancel(container, input_id)
        pool.revoke(container, grace_s=CANCEL_GRACE_S)

    def on_status(self, req: Request) -> dict[str, Any]:
        return {
            "runtime_id": self.runtime_id,
            "pid": os.getpid(),
            "endpoints": self.endpoints,
            "versions": versions(),
            "gpus": [g.__dict__ for g in self.gpus.gpus],
            "gpus_free": sorted(self.gpus.free),
            "cpus": {"total": self.cpus.total, "reserved": self.cpus.reserved},
            "apps": [a.describe() for a in self.apps.apps.values()],
            "pools": [p.stats() for p in self.pools.values() if not (p.retired and p.empty)],
            "containers": self.containers.stats(),
            "sessions": len(self.sessions),
            "stores": self.stores.stats(),
        }

    def on_shutdown(self, req: Request) -> dict[str, Any]:
        asyncio.get_running_loop().call_later(0.05, self.stopped.set)
        return {}

    # -- container messages -------------------------------------------------------------------

    def on_container_message(self, listener: Listener, frames: list[Frame]) -> None:
        cid = frames[0].bytes.decode(errors="replace")
        container = self.containers.containers.get(cid)
        try:
            header = framing.decode_header(frames[1:])  # payloads pass through unread
            handler = self.container_handlers.get(header["t"])
            if container is None or handler is None:
                log.warning("dropped %r from container %s (unknown container or type)", header["t"], cid)
                return
            handler(container, header, frames[1:])
        except Exception:
            log.exception("bad message from container %s", cid)

    def _pool_of(self, container: ContainerRecord) -> Pool | None:
        return self.pools.get(container.fid)

    def on_container_hello(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        if pool is None:
            self.containers.stop(container, "its function is gone", 1.0)
            return
        fn = pool.fn
        load = {"t": "load", "fid": fn.fid, "options": fn.options}
        self.send_container(container.id, framing.encode(load, [fn.body]))

    def on_container_ready(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        if isinstance(header.get("direct"), str):
            container.direct = header["direct"]
        if pool is not None:
            pool.on_ready(container)

    def on_container_released(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        if pool is not None:
            pool.on_released(container, float(header.get("idle_s", 0.0)), str(header.get("last", "")))

    def on_container_lease_used(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        if pool is not None:
            pool.on_lease_used(container, int(header.get("n", 0)), int(header.get("us", 0)))

    def on_container_load_failed(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        if pool is not None:
            pool.on_load_failed(container, header["error"], frames)

    def on_container_output(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self.input_pool.get(header.get("id", ""))
        inp = pool.inputs.get(header["id"]) if pool is not None else None
        if inp is None:
            return
        if inp.peer is JOB_PEER:
            if header["t"] == "output":
                self.jobs.on_output(inp.id, str(header.get("text", "")))
        else:
            self.send_peer(inp.peer, frames)

    def on_container_result(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        if pool is not None:
            pool.on_results(container, [Result(header, framing.split_payloads(header, frames[2:]), frames)])

    def on_container_results(self, container: ContainerRecord, header: dict[str, Any], frames: list[Frame]) -> None:
        pool = self._pool_of(container)
        message = ResultMessage(header, frames)
        if pool is None:
            return
        self._held = {}
        try:
            pool.on_results(container, message.results())
        finally:
            self._send_held()

    def on_container_exit(self, container: ContainerRecord) -> None:
        if container.lease is not None:  # its leaseholder hands back the call it may be waiting for
            lost = {"t": "lease_lost", "fid": container.lease.fid, "cid": container.id,
                    "cause": container.death_cause()}
            self.send_peer(container.lease.peer, framing.encode(lost))
        pool = self._pool_of(container)
        if pool is not None:
            pool.on_exit(container)
        for other in self.pools.values():  # a freed GPU may unblock another pool
            if other is not pool and other.waiting:
                other.dispatch()
