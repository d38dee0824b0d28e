"""The ``Backend`` interface: how the runtime gets a container started, watched and stopped.

Everything above a backend (the pools, the daemon's container bookkeeping in
``containers.py``) speaks of containers by id and through this interface only;
none of it knows whether a container is a local process, a sandboxed one or a
Ray actor on another node.

Invariants every backend keeps:

- ``start`` returns at once.  The container comes up in the background and
  connects back to the daemon at ``spec.connect`` (the backend's own
  ``connect_back.connect``), where it says ``hello`` and later ``ready``; until
  then it is *starting*, however long that takes (milliseconds locally,
  seconds for a Ray actor).
- Every started container is reported to ``on_exit`` exactly once, with a
  ``ContainerExit`` whose ``cause`` says why it ended, also when it never came
  up (``cause``: "it could not be started: ...").
- ``check`` refuses, with ``SpecRefused`` saying why and what to change, a spec
  the backend could never satisfy (GPUs its hosts lack, more CPUs than it has);
  it is called when a function is registered, before any input waits for it.
- ``stop`` is idempotent and always ends in the container's exit: politely
  first (``interrupt``: let running user code unwind; ``asked``: the container
  was told to stop by message), by force after ``grace_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..protocol.errors import ErrorName
from ..protocol.options import FunctionOptions

if TYPE_CHECKING:
    from ..auth import ContainerGate


@dataclass(frozen=True)
class ConnectBack:
    """Where a backend's containers reach the daemon.

    ``bind``: what the daemon's container socket binds; ``connect``: what a container
    connects to (the same for ipc://; for tcp:// the daemon host's address as the
    container's node sees it); ``same_host``: the containers share this host's
    ``/dev/shm``, so large buffers may travel through shared memory.
    """

    bind: str
    connect: str
    same_host: bool


@dataclass(frozen=True)
class ContainerImage:
    """What a container of a built image runs in: the image's own interpreter and what it needs around it.

    ``python``: the image venv's interpreter (the container runs it, not the runtime's); ``roots``: host
    folders it reads (the venv, its base interpreter's prefix, the runtime's own code), bound read-only
    in a sandbox; ``env``: the image's variables (``env`` steps); ``workdir``: the containers' working
    directory; ``files``: (host folder, container path) pairs put in place read-only at start, in order
    (a later one over an earlier one); ``pythonpath``: container paths first on its import path;
    ``rootfs``: the host folder that is the container's ``/`` (read-only) for an image with system steps
    (``apt_install``, ``run_commands``, ``run_function``, ``from_registry``), None: the host's own system.
    """

    python: str
    roots: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    pythonpath: tuple[str, ...] = ()
    rootfs: str | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """What a backend gets to start one container of a function.

    ``cid`` and ``connect`` are filled in by ``ContainerManager.start``; the rest comes
    from the pool: the function's options (``max_inputs``, ``gpu``, ``cpu``,
    ``memory_mib``, ...), its environment, its built image (None: the runtime's own Python), the GPUs
    reserved for it on this host and its share of the CPU budget.
    """

    fid: str
    options: FunctionOptions = field(default_factory=FunctionOptions)
    env: Mapping[str, str] = field(default_factory=dict)
    image: ContainerImage | None = None  # its built image; None: the runtime's own interpreter
    gpus: tuple[int, ...] = ()  # device indices reserved on this host (CUDA_VISIBLE_DEVICES)
    cpu: float = 0.0  # cores reserved from the host's budget
    agent: str | None = None  # an ``rc.Sandbox``'s: the sandbox agent runs instead of the function server,
    # connected to this socket of its own (a host path), the one thing of the runtime its sandbox shows
    cid: str = ""  # the name it says hello with
    connect: str = ""  # where it connects back

    @classmethod
    def wanted(cls, options: FunctionOptions) -> ContainerSpec:
        """What a function's options ask of every container of it: what ``check`` judges at registration."""
        return cls("", options, cpu=options.cpu or 0.0)

    @property
    def max_inputs(self) -> int:
        return self.options.max_inputs

    @property
    def gpu(self) -> str | list[str] | None:
        """The GPU request as the user wrote it (``"any"``, ``"H100:2"``, a list of choices), or None."""
        return self.options.gpu or None


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended: a sentence from its backend and its last lines of output."""

    cause: str  # "it exited with code 1", "it was killed by signal SIGKILL", "it could not be started: ..."
    code: int | None = None  # its exit status where the backend has one (None: unknown, or never started)
    tail: tuple[str, ...] = ()  # its last output lines, oldest first

    @property
    def clean(self) -> bool:
        return self.code == 0


class SpecRefused(ValueError):
    """A spec this backend can never satisfy; the message says why and what to change."""

    type_name = ErrorName.INVALID


ExitCallback = Callable[[str, ContainerExit], None]  # (cid, how it ended)


class Backend(Protocol):
    """Starts containers for specs and reports their exits; see the module docstring for its contract."""

    @property
    def connect_back(self) -> ConnectBack: ...

    def bound(self, endpoint: str, gate: ContainerGate | None) -> None:
        """The daemon bound ``connect_back.bind`` at ``endpoint`` (a tcp:// port 0 resolved); for a tcp:// socket,
        ``gate`` admits each container's key (the backend admits a key before that container connects)."""

    def load_env(self, cid: str) -> dict[str, str]:
        """Environment the container gets with ``load``, over the daemon's channel (what must not go through
        the backend's own means: a Ray actor's arguments are readable on Ray's network); {}: none."""

    def close(self) -> None:
        """The runtime is done with it (after every container was stopped or killed)."""

    def check(self, spec: ContainerSpec) -> None:
        """Raise ``SpecRefused`` if no container of ``spec`` could ever start here."""

    def start(self, spec: ContainerSpec, on_exit: ExitCallback) -> None:
        """Begin starting container ``spec.cid``; returns at once (the container says hello when up)."""

    def stop(self, cid: str, grace_s: float, *, interrupt: bool = False, asked: bool = False) -> None:
        """End it: interrupt its user code first (``interrupt``), or wait for it to leave (``asked``: it was told
        to stop by message); force it ``grace_s`` later."""

    def kill(self, cid: str) -> None:
        """End it by force now (the runtime is shutting down)."""

    def interrupt(self, cid: str, input_id: str) -> None:
        """Interrupt ``input_id`` if it is the one running there (a container that runs one input at a time)."""

    def alive(self, cid: str) -> bool:
        """Whether it has started and not yet ended."""

    def placement(self, cid: str) -> str:
        """Where it runs, for people: "pid 4242 on this host", "Ray actor ... on node ..."."""

    def memory_mib(self, cid: str) -> float | None:
        """Its resident memory, where the backend can tell."""
