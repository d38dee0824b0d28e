"""The daemon: transport, authentication, sessions and dispatch; the services do the work.

Clients talk to a ROUTER (ipc:// in a 0700 directory, and tcp:// behind CURVE
and a ZAP allowlist); containers talk to a second ROUTER on ipc://.  Every
message is decoded (header only) and handed to the one handler of its type,
which a service registered (see ``services/``); a refused or bad message gets
an ``error`` reply by name and is logged, an unknown type is refused by name,
and the loop goes on.  Payload frames pass through untouched: the daemon never
unpickles user data.  The daemon is the services' ``Host``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from . import auth, services
from .backends.choice import BackendChoice
from .backends.spares import Spares
from .listeners import Listener, StreamListener, StreamPeer
from .pools import Peer
from .protocol import framing, sharedmem, stream
from .protocol.errors import ErrorName
from .protocol.framing import Frame, WireError
from .protocol.versions import versions
from .services.base import Report, Request, RequestError, error_reply, refusal, with_id
from .services.functions import drop_inputs_of
from .services.jobs import RETENTION_S

log = logging.getLogger("remotecell.runtime")

HEARTBEAT_TIMEOUT_S = float(os.environ.get("REMOTECELL_HEARTBEAT_TIMEOUT_S", "30"))
TICK_S = 0.5
SHM_SWEEP_EVERY_S = 2.0  # segments of dead containers and clients go after this long (and this long untouched)
CONTAINER_STOP_GRACE_S = 3.0  # at shutdown, then the rest are killed


class StateBusy(Exception):
    """Another runtime serves this state folder."""


def lock_state_dir(state_dir: Path) -> int:
    """An exclusive lock on ``state_dir`` held while the returned fd stays open (until the process ends).

    Two runtimes on one state folder would take each other's sockets and share its databases;
    the second one is refused instead.
    """
    fd = os.open(state_dir / "runtime.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateBusy(f"another runtime serves {state_dir} already (`remotecell status` shows it; "
                        "`remotecell stop` stops it, or give this one --state-dir elsewhere)") from None
    return fd


@dataclass
class Session:
    sid: str
    last_seen: float = field(default_factory=time.monotonic)
    key: str | None = None  # over tcp://: the client's public key (its token), for revocation
    peers: set[Peer] = field(default_factory=set)  # where its messages came from (its sockets)


class Daemon:
    """Sockets, keys, sessions and the handler tables; implements ``services.base.Host``."""

    def __init__(self, state_dir: Path, binds: list[str], retention_s: float = RETENTION_S,
                 shares: Sequence[str] = (), on_demand: bool = False, web_bind: str | None = None,
                 web_max_body: int | None = None, web_public: bool = False,
                 backend: BackendChoice | None = None, spares: Spares | None = None) -> None:
        self.state_dir = state_dir
        self.spares = spares  # warm containers started before the daemon (``backends/spares.py``)
        self.backend = backend or BackendChoice()  # where containers run (``backends/choice.py``)
        self.web_bind = web_bind  # the web gateway's HOST:PORT (None: loopback, its default port or a free one)
        self.web_max_body = web_max_body  # the largest request body it takes (None: 100 MiB)
        self.web_public = web_public  # bound beyond loopback, endpoints without proxy auth answer anyone
        self.on_demand = on_demand  # a client started it on first use: clients start it again after a crash
        self.retention_s = retention_s
        self.shares = shares  # checked by ``sandbox.checked_shares``
        self.binds = binds or [f"ipc://{self.sock_dir / 'runtime.sock'}"]
        self.runtime_id = secrets.token_hex(4)
        self.shm_prefix = f"rc-{self.runtime_id}"
        self.ctx = zmq.Context()
        self.listeners: list[Listener] = []
        self.stream_listener: StreamListener | None = None  # local clients' blocking calls (see listeners.py)
        self.sessions: dict[str, Session] = {}
        self.revoked: set[Peer] = set()  # sockets of clients whose token was revoked: nothing is sent there
        self.stopped = asyncio.Event()
        self.gate: auth.ZapGate | None = None
        self.zap: Any = None  # the ZAP handler, once a tcp:// socket (clients', containers') needs one
        self.container_gate: auth.ContainerGate | None = None  # a tcp:// container socket's (Ray backend)
        self.reading = False  # handling what a read of a socket brought: ``_drained`` comes after (Host)
        self._next_sweep_s = 0.0  # monotonic time of the next sweep of dead processes' shared memory

    @property
    def sock_dir(self) -> Path:
        return self.state_dir / "sock"

    # -- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        auth.ensure_private_dir(self.state_dir)
        self.state_lock = lock_state_dir(self.state_dir)
        auth.ensure_private_dir(self.sock_dir)
        keys = auth.server_keys(self.state_dir)
        if any(b.startswith("tcp://") for b in self.binds):
            self.gate = auth.ZapGate(_zap(self), self.state_dir)
        for address in self.binds:
            self.listeners.append(self._bind_client(address, keys))
        local = [e for e in self.endpoints if e.startswith("ipc://")]
        if local:
            self.stream_listener = StreamListener(stream.client_path(local[0]), self.on_client_message,
                                                  self._drained, shm=_client_shm(self.backend))
        self.services = services.build(self, str(self.sock_dir), self.shm_prefix, self._client_env(),
                                       self.retention_s, orphan_grace_s=HEARTBEAT_TIMEOUT_S, shares=self.shares,
                                       web_bind=self.web_bind, web_max_body=self.web_max_body,
                                       web_public=self.web_public, backend=self.backend, spares=self.spares)
        self.container_listener = self._bind_containers(keys)
        self.handlers = self.services.handlers()
        self.container_handlers = self.services.container_handlers()
        self.services.start()
        self.ticker = asyncio.ensure_future(self._tick())
        self._write_connection_file(keys)
        log.info("remotecell runtime %s serving on %s", self.runtime_id, ", ".join(self.endpoints))

    def _bind_containers(self, keys: auth.ServerKeys) -> Listener:
        """The containers' ROUTER: ipc:// for local ones; tcp:// behind CURVE for those on other hosts, each
        admitted by its key for its own id (``auth.ContainerGate``)."""
        backend = self.services.functions.containers.backend
        connect_back = backend.connect_back
        csock = self.ctx.socket(zmq.ROUTER)
        csock.router_mandatory = True
        csock.sndhwm = csock.rcvhwm = 0
        if connect_back.bind.startswith("tcp://"):
            auth.apply_curve_server(csock, keys)
            csock.zap_domain = auth.CONTAINER_DOMAIN.encode()
            self.container_gate = auth.ContainerGate(_zap(self))
        csock.bind(connect_back.bind)
        backend.bound(csock.getsockopt_string(zmq.LAST_ENDPOINT), self.container_gate)
        return Listener(csock, self.on_container_message, self._drained, shm=connect_back.same_host,
                        local=self.container_gate is None)

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
        shm = not is_tcp and _client_shm(self.backend)
        return Listener(sock, self.on_client_message, self._drained, shm=shm, local=not is_tcp)

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
            "on_demand": self.on_demand,
            "web_url": self.services.gateway.url,
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

    def stop(self) -> None:
        self.stopped.set()

    async def close(self) -> None:
        self.services.close()  # unfinished spawned calls stay in the store and run again after a restart
        await self.services.functions.wait_stopped(CONTAINER_STOP_GRACE_S)
        self.services.functions.containers.backend.close()
        if self.services.functions.spares is not None:  # killed with the backend; reaped before the loop ends
            await self.services.functions.spares.wait_closed()
        self.ticker.cancel()
        for lst in [*self.listeners, self.container_listener]:
            lst.close()
        if self.stream_listener is not None:
            self.stream_listener.close()
        if self.zap is not None:
            self.zap.stop()
        (self.state_dir / "connection.json").unlink(missing_ok=True)
        sharedmem.sweep_segments(self.shm_prefix)
        self.ctx.term()
        log.info("remotecell runtime %s stopped", self.runtime_id)

    async def _tick(self) -> None:
        """Sessions, keys and each service's periodic work; one that fails is logged and tried next time."""
        last_s = [0.0] * len(self.services.all)
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            _periodic(self._expire_sessions)
            if now >= self._next_sweep_s:
                self._next_sweep_s = now + SHM_SWEEP_EVERY_S
                _periodic(self._sweep_shared_memory)
            if self.gate is not None:
                _periodic(self._reload_keys)
            for i, service in enumerate(self.services.all):
                if now - last_s[i] >= service.tick_every_s:
                    last_s[i] = now
                    _periodic(service.tick, now)

    def _sweep_shared_memory(self) -> None:
        """What killed containers and clients left in /dev/shm (they could not unlink it themselves)."""
        containers = self.services.functions.containers.containers
        removed = sharedmem.sweep_orphans(self.shm_prefix, containers.__contains__, SHM_SWEEP_EVERY_S)
        if removed:
            log.info("removed %d shared-memory segments of processes that died", removed)

    # -- sessions -----------------------------------------------------------------------------

    def _seen(self, sid: str, peer: Peer, key: str | None) -> None:
        session = self.sessions.get(sid)
        if session is None:
            session = self.sessions[sid] = Session(sid, key=key)
        session.last_seen = time.monotonic()
        session.peers.add(peer)

    def _reload_keys(self) -> None:
        """Tokens revoked since the last look: their sessions end now (leases, ephemeral apps, queued inputs)."""
        assert self.gate is not None
        revoked = self.gate.reload_if_changed()
        for sid, session in list(self.sessions.items()):
            if session.key is not None and session.key in revoked:
                log.warning("token of client %s revoked: its session ends", sid)
                self.revoked |= session.peers
                self._end_session(sid)
                drop_inputs_of(self.services.functions, session.peers)

    def _end_session(self, sid: str) -> None:
        del self.sessions[sid]
        for service in self.services.all:
            service.session_ended(sid)

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            if now - session.last_seen > HEARTBEAT_TIMEOUT_S:
                self._end_session(sid)

    def live_sessions(self) -> set[str]:
        return set(self.sessions)

    # -- dispatch -----------------------------------------------------------------------------

    def on_client_message(self, listener: Listener | StreamPeer, identity: bytes, frames: list[Frame]) -> None:
        self.reading = True
        peer: Peer = (listener, identity)
        request_id = None
        try:
            header = framing.decode_header(frames)
            request_id = header.get("id")
            route = self.handlers.get(header.get("t"))  # type: ignore[arg-type]
            if route is None:
                raise refusal(ErrorName.INVALID, f"unknown message type {header.get('t')!r}")
            cls, handler = route
            msg = cls.from_wire(header)
            payloads = framing.split_payloads(header, frames[2:])
            if not listener.shm and (header.get("shm") or any(p.shm for p in payloads)):
                raise refusal(ErrorName.INVALID, "shared memory is only for clients on the runtime's host")
            key = self._client_key(listener, frames)
            sid = header.get("sid")
            sid = sid if type(sid) is str else ""
            if sid:
                self._seen(sid, peer, key)
            reply = handler(Request(peer, msg, request_id, sid, payloads, frames))
        except (WireError, RequestError, KeyError, TypeError, ValueError) as exc:
            self._refuse(peer, request_id, exc)
            return
        except Exception as exc:
            log.exception("handler failed")
            self._refuse(peer, request_id, exc)
            return
        if reply is not None:
            self.send_peer(peer, framing.encode(with_id(reply, request_id)))

    def _client_key(self, listener: Listener | StreamPeer, frames: list[Frame]) -> str | None:
        """Over tcp://, the key (token) the message came with; refused when it was revoked since the client
        connected (ZeroMQ authenticates a connection once)."""
        if listener.local or self.gate is None:
            return None
        key = frames[0].get("User-Id")  # a ROUTER's frames are zmq.Frames, with their connection's metadata
        if not self.gate.allows(key):
            raise refusal(ErrorName.AUTH, "this client's token was revoked: ask the runtime's operator for a new "
                                          "one (`remotecell token new NAME`)")
        return str(key)

    def _refuse(self, peer: Peer, request_id: Any, exc: Exception) -> None:
        type_name = getattr(exc, "type_name", ErrorName.INVALID)
        message = str(exc) if not isinstance(exc, KeyError) else f"missing field {exc}"
        log.warning("refused a message from %r: %s", peer[1], message)
        listener, identity = peer  # not send_peer: a revoked client hears why it is refused
        listener.send(identity, error_reply(request_id, type_name, message))

    def _drained(self) -> None:
        self.reading = False
        self.services.drained()

    def on_container_message(self, listener: Listener | StreamPeer, identity: bytes, frames: list[Frame]) -> None:
        self.reading = True
        cid = identity.decode(errors="replace")
        container = self.services.functions.containers.containers.get(cid)
        if self.container_gate is not None and self.container_gate.owner(frames[0].get("User-Id")) != cid:
            log.warning("dropped a message from container %s: it did not come with that container's key", cid)
            return  # an admitted key speaks for its own container only
        try:
            header = framing.decode_header(frames)  # payloads pass through unread
            route = self.container_handlers.get(header.get("t"))  # type: ignore[arg-type]
            if container is None or route is None:
                log.warning("dropped %r from container %s (unknown container or type)", header.get("t"), cid)
                return
            cls, handler = route
            handler(container, Report(cls.from_wire(header), header, frames))
        except Exception:
            log.exception("bad message from container %s", cid)

    def send_peer(self, peer: Peer, frames: list[Frame]) -> None:
        if self.revoked and peer in self.revoked:
            return
        listener, identity = peer
        listener.send(identity, frames)

    def send_container(self, cid: str, frames: list[Frame]) -> None:
        self.container_listener.send(cid.encode(), frames)


def _client_shm(backend: BackendChoice) -> bool:
    """Whether local clients may send large buffers through shared memory: only where every container is on
    this host too (the daemon passes them on untouched; a container on another node could not read them)."""
    return backend.same_host and sharedmem.ShmPool.available()


def _zap(daemon: Daemon) -> Any:
    """The daemon's one ZAP handler, started when a tcp:// socket (clients', containers') first needs it."""
    if daemon.zap is None:
        daemon.zap = auth.start_zap(daemon.ctx)
    return daemon.zap


def _periodic(work: Callable[..., None], *args: Any) -> None:
    try:
        work(*args)
    except Exception:
        log.exception("periodic work failed")
