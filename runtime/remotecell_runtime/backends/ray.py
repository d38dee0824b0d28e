"""The Ray backend: each container is a Ray actor (``ContainerHost``) that runs the container process on its node.

The daemon stays the one that routes, batches, leases and keeps jobs; Ray only decides where a
container runs.  Each container is one actor in the Ray namespace ``remotecell``, asked for the
function's resources (``gpu="A100:2"``: 2 GPUs and ``accelerator_type:A100``; ``cpu=``; ``memory=``), with
no restarts: a container that dies is reported dead and the pools start another, as with local ones.

How a container on another node connects back without trusting Ray with a secret (Ray is
unauthenticated: whatever goes through its arguments, results or object store, anyone on its
network may read):

1. the actor makes a CURVE key pair on its node; its secret half never leaves that node (the
   container process reads it from an inherited pipe, not from its command line);
2. the daemon asks the actor for the public half (``node``) and admits it in ``auth.ContainerGate``
   for that one container id, then has the actor start the container (``run``) with the daemon's
   public key and its tcp:// address, neither of them secret;
3. the container connects over CURVE; ZAP lets in admitted keys only, and the daemon takes a
   message only from the key of the container id it names.  Its environment (secrets included)
   comes at ``load``, over that encrypted channel.

Ray must still be kept to a private network: whoever can use a Ray cluster can run code on its
nodes, which no key of ours can change.  What this buys is that the daemon's tcp:// port admits
only containers it started, and that payloads, results and secrets never cross the network (or
Ray's stores and logs) in the clear.

Only this module imports ray, and only when the ``ray`` backend is chosen.  The actor class is a
plain class here (``ContainerHost``), made a Ray actor class at start: its module must import on
every node without ray being asked for anything but the actor's own context.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import Any

from ..auth import ContainerGate
from ..gpus import parse_spec
from ..protocol.options import FunctionOptions
from .base import ConnectBack, ContainerExit, ContainerImage, ContainerSpec, ExitCallback, SpecRefused
from .choice import BackendChoice
from .local import INTERRUPT_GRACE_S, LOG_TAIL_LINES, VOLUMES_ENV, _cause, image_environment

log = logging.getLogger("remotecell.runtime")

NAMESPACE = "remotecell"
DEFAULT_CPU = 0.125  # what a container without cpu= asks Ray for (Modal's default reservation)
AUTOSCALER_ENV = "REMOTECELL_RAY_AUTOSCALER"  # "1": Ray's autoscaler adds nodes, so no spec is refused up front
SANDBOXES_REFUSED = "rc.Sandbox is not available on the Ray backend: run sandboxes on a runtime started with " \
    "--backend local"
NODE_ENV = "REMOTECELL_RAY_NODE_ID"  # the Ray node a container runs on, in its environment


@dataclass(frozen=True)
class Demand:
    """What one container asks Ray for: its actor's options, and the same as node resources for ``check``."""

    cpu: float
    gpus: int = 0
    accelerator: str | None = None  # Ray's accelerator type ("A100"); None: any GPU
    memory_bytes: int | None = None

    @classmethod
    def of(cls, options: FunctionOptions, choice: int = 0) -> Demand:
        """The demand of ``options``, for the ``choice``-th of its GPU choices (``gpu=["H100", "A100"]``)."""
        cpu = options.cpu or DEFAULT_CPU
        memory = options.memory_mib * 2**20 if options.memory_mib else None
        if not options.gpu:
            return cls(cpu, memory_bytes=memory)
        kind, count = parse_spec(options.gpu)[choice]
        return cls(cpu, count, None if kind.lower() == "any" else kind.upper(), memory)

    def resources(self) -> dict[str, float]:
        """As a node's resources: what a node must have for the container to fit there, one at a time."""
        wanted: dict[str, float] = {"CPU": self.cpu}
        if self.gpus:
            wanted["GPU"] = self.gpus
        if self.accelerator:
            wanted[f"accelerator_type:{self.accelerator}"] = 0.001  # what Ray's accelerator_type= asks for
        if self.memory_bytes:
            wanted["memory"] = self.memory_bytes
        return wanted

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.cpu, "num_gpus": self.gpus}
        if self.accelerator:
            options["accelerator_type"] = self.accelerator
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        return options

    def describe(self) -> str:
        gpu = f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}" + (f" of type {self.accelerator}"
                                                                 if self.accelerator else "")
        parts = [f"{self.cpu:g} CPUs", gpu if self.gpus else "",
                 f"{self.memory_bytes / 2**20:.0f} MiB of memory" if self.memory_bytes else ""]
        return ", ".join(p for p in parts if p)


def missing(demand: Demand, nodes: list[dict[str, float]]) -> str | None:
    """Why no node of ``nodes`` (their total resources) could ever hold a container of ``demand``, or None."""
    wanted = demand.resources()
    shorts = [[k for k, v in wanted.items() if node.get(k, 0.0) < v] for node in nodes]
    if any(not short for short in shorts):
        return None
    closest = min(shorts, key=len) if shorts else sorted(wanted)  # what the best-fitting node lacks
    have = "; ".join(_describe_node(n) for n in nodes) or "no live nodes"
    return f"no node of the Ray cluster has {demand.describe()} (short of: {', '.join(closest)}; nodes: {have})"


def _describe_node(resources: dict[str, float]) -> str:
    types = [k.removeprefix("accelerator_type:") for k in resources if k.startswith("accelerator_type:")]
    gpus = f", {resources['GPU']:g} GPUs" + (f" ({', '.join(types)})" if types else "") if "GPU" in resources else ""
    return f"{resources.get('CPU', 0):g} CPUs{gpus}"


@dataclass(frozen=True)
class HostMark:
    """A file only the daemon's host has: ``path`` (in the daemon's private socket folder) holding ``token``.

    An actor that reads it is on the daemon's host (and its user), so a socket it makes in that folder is
    one the daemon's clients can reach; nothing here is secret (a look-alike file elsewhere only makes a
    container listen where no client connects)."""

    path: str
    token: str

    @classmethod
    def make(cls, folder: str) -> HostMark:
        token = secrets.token_hex(16)
        path = os.path.join(folder, f"ray-host-{token[:8]}")
        with open(path, "w") as f:
            f.write(token)
        return cls(path, token)

    def is_here(self) -> bool:
        try:
            with open(self.path) as f:
                return f.read() == self.token
        except OSError:
            return False


class ContainerHost:
    """The Ray actor of one container: it makes the container's key pair, then runs its process on this node.

    Its methods are async (Ray runs them concurrently on the actor's event loop): ``run`` waits for the
    process to end while ``signal`` and ``interrupt`` reach it meanwhile.
    """

    def __init__(self, cid: str) -> None:
        import zmq

        self.cid = cid
        self.public, self.secret = zmq.curve_keypair()  # the secret half stays on this node
        self.proc: asyncio.subprocess.Process | None = None
        self.cancel_w: int | None = None

    async def node(self) -> dict[str, Any]:
        """Where it runs, the GPUs Ray gave it and its public key (nothing secret: this goes through Ray)."""
        import ray

        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "actor_id": context.get_actor_id(), "gpus": [str(g) for g in ray.get_gpu_ids()],
                "public_key": self.public.decode()}

    async def run(self, connect: str, server_key: str, folders: list[str], daemon_host: HostMark | None = None,
                  direct: str | None = None, image_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run the container process until it ends: its exit code and its last output lines.  On the daemon's
        own host (``daemon_host`` is there) it also listens on ``direct``, a socket in the daemon's private
        folder, for a leaseholder's calls, as a local container does.  ``image_env``: where its image's venv
        is (``_start_env``), None: the runtime's own Python."""
        lost = [f for f in folders if not os.path.isdir(f)]
        if lost:
            return {"cause": f"it could not be started: its volume folder {lost[0]} is not on this Ray node; "
                             "volumes on the Ray backend need a state folder every node shares at the same path"}
        python = os.path.join(image_env["VIRTUAL_ENV"], "bin", "python") if image_env else sys.executable
        if not os.path.exists(python):
            return {"cause": f"it could not be started: its image's venv {os.path.dirname(os.path.dirname(python))} "
                             "is not on this Ray node; images are built where the runtime runs, so other nodes "
                             "need the runtime's state folder shared at the same path (as volumes do)"}
        info = await self.node()
        cancel_r, self.cancel_w = os.pipe()
        os.set_blocking(self.cancel_w, False)
        key_r, key_w = os.pipe()
        os.write(key_w, self.public + b"\n" + self.secret + b"\n")  # 82 bytes: the pipe holds them
        os.close(key_w)
        env = {**os.environ, **(image_env or {}), "PYTHONUNBUFFERED": "1", "REMOTECELL_TASK_ID": self.cid,
               NODE_ENV: info["node_id"], "CUDA_VISIBLE_DEVICES": ",".join(info["gpus"])}
        if image_env:
            env["PATH"] = os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", "")])
        command = [python, "-m", "remotecell_runtime.container", "--connect", connect, "--id", self.cid,
                   "--cancel-fd", str(cancel_r), "--server-key", server_key, "--key-fd", str(key_r)]
        if direct is not None and daemon_host is not None and daemon_host.is_here():
            command += ["--direct", direct]
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, pass_fds=(cancel_r, key_r), start_new_session=True)
        except OSError as exc:
            return {"cause": f"it could not be started: {exc}"}
        finally:
            os.close(cancel_r)
            os.close(key_r)
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            tail.append(raw.decode(errors="replace").rstrip("\n"))
        return {"code": await self.proc.wait(), "tail": list(tail)}

    async def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def interrupt(self, input_id: str) -> None:
        """As the local backend's: the input's id to the cancel pipe, then SIGINT."""
        if self.cancel_w is None:
            return
        try:
            os.write(self.cancel_w, input_id.encode() + b"\n")
        except OSError:
            return
        await self.signal(signal.SIGINT)


@dataclass
class _Actor:
    spec: ContainerSpec
    handle: Any = None  # the actor, once asked for
    node: dict[str, Any] | None = None  # its ``ContainerHost.node``, once placed
    stopping: bool = False
    ended: bool = False


class RayBackend:
    """Containers as Ray actors on a Ray cluster's nodes, connecting back over tcp:// with CURVE."""

    def __init__(self, choice: BackendChoice, server_key: str, sock_dir: str) -> None:
        import ray

        self.ray = ray
        self.choice = choice
        self.server_key = server_key
        self.sock_dir = sock_dir
        self.here_mark = HostMark.make(sock_dir)
        # A runtime that starts its own Ray (no address) needs no dashboard; one joining a cluster may not pass it.
        extra: dict[str, Any] = {} if choice.ray_address else {"include_dashboard": False}
        ray.init(address=choice.ray_address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                 **extra)
        self.here = ray.util.get_node_ip_address()  # this host as Ray sees it
        self.host_class = ray.remote(ContainerHost)
        self.gate: ContainerGate | None = None
        self.connect = ""
        self.actors: dict[str, _Actor] = {}
        log.info("containers run as Ray actors (namespace %s) on the cluster at %s", NAMESPACE,
                 choice.ray_address or "a local Ray started for this runtime")

    @property
    def connect_back(self) -> ConnectBack:
        return ConnectBack(bind=self.choice.container_bind, connect=self.connect, same_host=False)

    def bound(self, endpoint: str, gate: ContainerGate | None) -> None:
        self.connect = self.choice.container_address or endpoint
        self.gate = gate

    def nodes(self) -> list[dict[str, float]]:
        """The live nodes' total resources."""
        return [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]

    def check(self, spec: ContainerSpec) -> None:
        if spec.agent is not None:
            raise SpecRefused(SANDBOXES_REFUSED)
        if os.environ.get(AUTOSCALER_ENV) == "1":
            return  # the autoscaler adds nodes for pending actors: nothing is out of reach up front
        nodes = self.nodes()
        whys = [missing(self._demand(spec.options, i), nodes) for i in range(_choices(spec.options))]
        if all(whys):
            raise SpecRefused(" / ".join(w for w in whys if w) + ": give the function resources a node has, or add "
                              "such a node to the cluster (with Ray's autoscaler, start the runtime with "
                              f"{AUTOSCALER_ENV}=1)")

    def _demand(self, options: FunctionOptions, choice: int = 0) -> Demand:
        return Demand.of(options, choice)

    def _placeable(self, options: FunctionOptions) -> Demand:
        """The first of the GPU choices some node could hold (Ray takes one demand an actor)."""
        nodes = self.nodes()
        demands = [self._demand(options, i) for i in range(_choices(options))]
        return next((d for d in demands if missing(d, nodes) is None), demands[0])

    def start(self, spec: ContainerSpec, on_exit: ExitCallback) -> None:
        if spec.agent is not None:  # an rc.Sandbox's container: its agent needs a socket on the daemon's host
            asyncio.get_running_loop().call_soon(on_exit, spec.cid, ContainerExit(
                f"it could not be started: {SANDBOXES_REFUSED}"))
            return
        actor = self.actors[spec.cid] = _Actor(spec)
        asyncio.ensure_future(self._run(actor, on_exit))

    async def _run(self, actor: _Actor, on_exit: ExitCallback) -> None:
        spec = actor.spec
        try:
            exit = await self._lifetime(actor)
        except self.ray.exceptions.RayActorError as exc:
            exit = ContainerExit(_actor_died(exc))
        except Exception as exc:  # Ray refused the actor (bad options, lost connection to the cluster)
            log.warning("container %s: %s", spec.cid, exc)
            exit = ContainerExit(f"it could not be started: {exc}")
        actor.ended = True
        if self.gate is not None:
            self.gate.forget(spec.cid)
        if actor.handle is not None:
            self.ray.kill(actor.handle, no_restart=True)  # its resources go back to the cluster now
        self.actors.pop(spec.cid, None)
        on_exit(spec.cid, exit)

    async def _lifetime(self, actor: _Actor) -> ContainerExit:
        """Ask Ray for the actor, admit its key, run the container; how it ended."""
        spec = actor.spec
        demand = self._placeable(spec.options)
        actor.handle = self.host_class.options(namespace=NAMESPACE, max_restarts=0, max_task_retries=0,
                                               **demand.actor_options()).remote(spec.cid)
        if actor.stopping:
            return ContainerExit("it was stopped before it started")
        actor.node = node = await actor.handle.node.remote()  # waits until Ray placed it
        why = self._unreachable(node)
        if why:
            return ContainerExit(f"it could not be started: {why}")
        assert self.gate is not None
        self.gate.admit(spec.cid, node["public_key"])
        folders = list(json.loads(spec.env.get(VOLUMES_ENV) or "{}").values())
        direct = os.path.join(self.sock_dir, f"{spec.cid}.sock")
        try:
            result = await actor.handle.run.remote(self.connect, self.server_key, folders, self.here_mark, direct,
                                               _start_env(spec.image))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(direct)  # a killed container leaves its socket behind (on this host, if it was here)
        if "cause" in result:
            return ContainerExit(result["cause"])
        return ContainerExit(_cause(result["code"]), result["code"], tuple(result["tail"]))

    def _unreachable(self, node: dict[str, Any]) -> str | None:
        """Why a container on ``node`` could not reach the daemon: a loopback address seen from another host."""
        host = self.connect.removeprefix("tcp://").rpartition(":")[0]
        if not (host.startswith("127.") or host in ("localhost", "[::1]")) or node["node_ip"] == self.here:
            return None
        return (f"Ray placed it on node {node['node_ip']}, which cannot reach the runtime at {self.connect} (this "
                "host's loopback): start the runtime with --container-bind tcp://0.0.0.0:PORT --container-address "
                "tcp://THIS_HOST:PORT")

    def load_env(self, cid: str) -> dict[str, str]:
        """Its environment (secrets among it, and its image's variables), sent with ``load`` over the encrypted
        channel, never through Ray."""
        actor = self.actors.get(cid)
        if actor is None:
            return {}
        return {**(actor.spec.image.env if actor.spec.image else {}), **actor.spec.env}

    def stop(self, cid: str, grace_s: float, *, interrupt: bool = False, asked: bool = False) -> None:
        actor = self.actors.get(cid)
        if actor is None:
            return
        actor.stopping = True
        if actor.handle is None:
            return  # ``_lifetime`` sees ``stopping`` as soon as it has the actor
        loop = asyncio.get_running_loop()
        if interrupt:
            actor.handle.signal.remote(signal.SIGINT)
            loop.call_later(INTERRUPT_GRACE_S, self._signal, cid, signal.SIGTERM)
            grace_s += INTERRUPT_GRACE_S
        elif not asked:
            actor.handle.signal.remote(signal.SIGTERM)
        loop.call_later(grace_s, self.kill, cid)

    def _handle(self, cid: str) -> Any:
        """The live actor of ``cid``, once Ray was asked for it; None before and after."""
        actor = self.actors.get(cid)
        return actor.handle if actor is not None and not actor.ended else None

    def _signal(self, cid: str, sig: int) -> None:
        handle = self._handle(cid)
        if handle is not None:
            handle.signal.remote(sig)

    def kill(self, cid: str) -> None:
        """End the actor: its process goes with it (the container dies with its parent)."""
        handle = self._handle(cid)
        if handle is not None:
            self.ray.kill(handle, no_restart=True)

    def interrupt(self, cid: str, input_id: str) -> None:
        handle = self._handle(cid)
        if handle is not None:
            handle.interrupt.remote(input_id)

    def alive(self, cid: str) -> bool:
        actor = self.actors.get(cid)
        return actor is not None and actor.node is not None and not actor.ended

    def placement(self, cid: str) -> str:
        actor = self.actors.get(cid)
        if actor is None:
            return "a Ray actor (not running)"
        if actor.node is None:
            return "a Ray actor waiting for a node with its resources"
        node = actor.node
        gpus = f" with GPUs {','.join(node['gpus'])}" if node["gpus"] else ""
        return f"Ray actor {node['actor_id'][:12]} on node {node['node_id'][:12]} ({node['node_ip']}){gpus}"

    def memory_mib(self, cid: str) -> float | None:
        return None  # memory= is Ray's reservation; the node's own memory monitor acts on pressure

    def close(self) -> None:
        self.ray.shutdown()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.here_mark.path)


def _start_env(image: ContainerImage | None) -> dict[str, str] | None:
    """What a container of ``image`` starts with on its node: its venv first on ``PATH`` and its import path
    (paths only: the image's own variables, which may hold anything, come with ``load``)."""
    if image is None:
        return None
    env = image_environment(image)
    return {key: env[key] for key in ("VIRTUAL_ENV", "PYTHONPATH")}  # the node's PATH, after the venv's bin


def _choices(options: FunctionOptions) -> int:
    return len(parse_spec(options.gpu)) if options.gpu else 1


def _actor_died(exc: Exception) -> str:
    """Ray's long account of an actor's death, as the one sentence a death report gives."""
    text = str(exc)
    if "node has died" in text or "node was terminated" in text:
        node = next((line.split("Node Id:")[1].strip() for line in text.splitlines() if "Node Id:" in line), "")
        return f"its Ray node {node[:12]} died".replace("  ", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "its Ray actor died: " + (lines[-1] if lines else type(exc).__name__)
