"""``PoolHost``: what a pool needs of the process that holds it (the daemon).

A pool sends through its host (to containers, to callers), starts and stops
containers through the host's ``ContainerManager`` (never a backend directly),
reserves GPUs and CPUs from the host's inventories, and asks the host to free
what another pool's idle container holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..containers import ContainerManager, ContainerRecord
from ..cpus import CpuBudget
from ..gpus import GpuAllocator
from ..protocol.framing import Frame
from ..result_cache import ResultCache
from .inputs import FunctionDef, Peer, Result

if TYPE_CHECKING:
    from ..images.builder import Images  # made at its first use (``Functions.images``)


class Requester(Protocol):
    """The pool that asks for a ``reclaim`` (a ``Pool``), as far as the host reads it."""

    fn: FunctionDef
    waiting_reason: str


class PoolHost(Protocol):
    containers: ContainerManager
    gpus: GpuAllocator
    cpus: CpuBudget
    result_cache: ResultCache  # cache=True functions' results

    @property
    def images(self) -> Images: ...

    def send_container(self, cid: str, frames: list[Frame]) -> None: ...
    def reclaim(self, requester: Requester, holds: Callable[[ContainerRecord], bool]) -> None: ...
    def send_peer(self, peer: Peer, frames: list[Frame]) -> None: ...
    def send_result(self, peer: Peer, result: Result) -> None: ...
    def input_done(self, input_id: str) -> None: ...
