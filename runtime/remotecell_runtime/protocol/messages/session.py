"""Saying hello, staying alive, asking how the runtime is, stopping it; and the error every request may get."""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire


@message("hello")
class HelloMsg(Message):
    """A client's first words: the versions it speaks (checked on its side against the reply's)."""

    versions: dict[str, Any] = wire(factory=dict)


@message("reply")
class HelloReply(Message):
    versions: dict[str, Any]
    runtime_id: str
    shm: bool  # the client shares this host: large buffers may go through shared memory
    gpus: str  # what GPUs this host has, in words


@message("ping")
class PingMsg(Message):
    """A heartbeat (its envelope's ``sid`` keeps the session alive)."""


@message("pong")
class PongMsg(Message):
    runtime_id: str


@message("status")
class StatusMsg(Message):
    pass


@message("reply")
class StatusReply(Message):
    """What the runtime is doing: its pools and containers, apps, sessions, stores and the host's GPUs and CPUs."""

    runtime_id: str
    pid: int
    endpoints: list[str]
    versions: dict[str, Any]
    gpus: list[dict[str, Any]]
    gpus_free: list[int]
    cpus: dict[str, Any]
    pools: list[dict[str, Any]]
    containers: dict[str, int]  # how many containers are in each state
    spares: list[int] = wire(factory=list)  # host pids of the spare containers ready (``backends/spares.py``)
    sandbox: str  # what isolates containers ("bubblewrap 0.8.0"), or "off: " and why
    limits: str  # which of memory= and cpu= are enforced, and how
    system_images: str = ""  # whether images with system steps can be built here ("off: " and why)
    apps: list[dict[str, Any]]
    sessions: int
    stores: dict[str, Any]
    sandboxes: list[dict[str, Any]]  # the rc.Sandbox-es that have not finished (each as sandbox_get's info)
    web: dict[str, Any] = wire(factory=dict)  # the web gateway: its url, and the live endpoints' URLs
    cache: dict[str, int] = wire(factory=dict)  # the result cache: entries, bytes, max_bytes, hits, misses


@message("shutdown")
class ShutdownMsg(Message):
    pass


@message("reply")
class EmptyReply(Message):
    """The answer of a request that has nothing to say but "done"."""


@message()
class ErrorInfo(Message):
    """An error as it travels: its class name (an ``ErrorName``, or a user exception's), text and traceback."""

    type: str
    message: str
    traceback: str = ""
    frames: list[Any] = wire(factory=list)  # [file, line, function, source] of the user's own frames
    debug: str = ""  # ``CONTAINER:KEY`` of the frames the container holds for a post-mortem (messages.debug)
    debug_hold_s: float = 0.0  # for how long it holds them from when it raised


@message("error")
class ErrorReply(Message):
    """A refused or failed request: the client raises the exception named ``error.type``."""

    error: ErrorInfo
