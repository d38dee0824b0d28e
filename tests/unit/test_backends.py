"""The Backend contract without a runtime: specs refused up front, records kept through exits, and the local
backend's real processes connecting back where it says and reported once when they end."""

from __future__ import annotations

import asyncio
import json

import pytest
import zmq
import zmq.asyncio
from remotecell_runtime.backends.base import ConnectBack, ContainerExit, ContainerSpec, ExitCallback, SpecRefused
from remotecell_runtime.backends.local import LocalBackend
from remotecell_runtime.containers import ContainerManager, ContainerRecord, State
from remotecell_runtime.cpus import CpuBudget
from remotecell_runtime.gpus import Gpu, GpuAllocator
from remotecell_runtime.protocol.options import FunctionOptions


def local_backend(sock_dir: str, gpus: list[Gpu] | None = None, cpus: float = 4.0) -> LocalBackend:
    return LocalBackend(sock_dir, "test", "rctest", {}, GpuAllocator(gpus or []), CpuBudget(cpus))


def test_a_gpu_the_host_lacks_is_refused_saying_what_it_has(tmp_path):
    backend = local_backend(str(tmp_path), [Gpu(0, "NVIDIA A100")])
    with pytest.raises(SpecRefused, match=r"gpu='H100' cannot be met: this host has 0: NVIDIA A100"):
        backend.check(ContainerSpec.wanted(FunctionOptions(gpu="H100")))
    with pytest.raises(SpecRefused, match="gpu='any:2' cannot be met"):
        backend.check(ContainerSpec.wanted(FunctionOptions(gpu="any:2")))
    backend.check(ContainerSpec.wanted(FunctionOptions(gpu="A100")))  # one it has: no error
    backend.check(ContainerSpec.wanted(FunctionOptions()))


def test_more_cpus_than_the_host_has_are_refused(tmp_path):
    backend = local_backend(str(tmp_path), cpus=2.0)
    with pytest.raises(SpecRefused, match=r"cpu=3 cannot be met: this host has 2 CPUs"):
        backend.check(ContainerSpec.wanted(FunctionOptions(cpu=3)))
    backend.check(ContainerSpec.wanted(FunctionOptions(cpu=2)))


class RecordingBackend:
    """A backend that starts nothing: it records what it was asked, and exits when the test says."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[ContainerSpec, ExitCallback]] = {}
        self.stops: list[tuple[str, float, bool, bool]] = []

    @property
    def connect_back(self) -> ConnectBack:
        return ConnectBack("tcp://0.0.0.0:5555", "tcp://10.0.0.1:5555", same_host=False)

    def check(self, spec: ContainerSpec) -> None:
        if spec.gpu:
            raise SpecRefused("this backend has no GPUs")

    def start(self, spec: ContainerSpec, on_exit: ExitCallback) -> None:
        self.started[spec.cid] = (spec, on_exit)

    def stop(self, cid: str, grace_s: float, *, interrupt: bool = False, asked: bool = False) -> None:
        self.stops.append((cid, grace_s, interrupt, asked))

    def kill(self, cid: str) -> None:
        pass

    def interrupt(self, cid: str, input_id: str) -> None:
        pass

    def alive(self, cid: str) -> bool:
        return cid in self.started

    def placement(self, cid: str) -> str:
        return "nowhere"

    def memory_mib(self, cid: str) -> float | None:
        return None

    def exit(self, cid: str, exit: ContainerExit) -> None:
        _, on_exit = self.started.pop(cid)
        on_exit(cid, exit)


def test_the_manager_names_the_container_and_gives_it_the_backends_connect_back_address():
    backend = RecordingBackend()
    manager = ContainerManager(backend, lambda record: None)
    record = manager.start(ContainerSpec("fn-1", FunctionOptions(max_inputs=4), {"A": "1"}, gpus=(1,), cpu=2.0))
    spec, _ = backend.started[record.id]
    assert spec.cid == record.id and spec.connect == "tcp://10.0.0.1:5555"
    assert (record.fid, record.max_inputs, record.gpus, record.cpus) == ("fn-1", 4, [1], 2.0)
    assert record.state is State.STARTING and manager.all() == [record]
    with pytest.raises(SpecRefused, match="no GPUs"):
        manager.check(FunctionOptions(gpu="any"))


def test_an_exit_is_reported_once_and_the_runtimes_reason_wins_over_the_backends_cause():
    backend = RecordingBackend()
    exits: list[ContainerRecord] = []
    manager = ContainerManager(backend, exits.append)
    record = manager.start(ContainerSpec("fn-1"))
    manager.stop(record, "it passed its timeout of 1 s", 5.0, interrupt=True)
    assert record.state is State.STOPPING and backend.stops == [(record.id, 5.0, True, False)]
    backend.exit(record.id, ContainerExit("it was killed by signal SIGKILL", -9, ("a", "b")))
    assert exits == [record] and record.state is State.DEAD and manager.all() == []
    assert record.death_cause() == (f"container {record.id} died under the call: it passed its timeout of 1 s"
                                    "\nlast output lines:\na\nb")
    manager.stop(record, "again", 1.0)  # a dead container: nothing more happens
    assert len(backend.stops) == 1

    crashed = manager.start(ContainerSpec("fn-1"))
    backend.exit(crashed.id, ContainerExit("it exited with code 3", 3))
    assert crashed.death_cause() == f"container {crashed.id} died under the call: it exited with code 3"
    assert not crashed.exit.clean


def test_a_local_container_connects_back_where_its_backend_says_and_its_exit_is_reported(tmp_path):
    async def main() -> tuple[list[bytes], list[tuple[str, ContainerExit]], bool, bool]:
        backend = local_backend(str(tmp_path))
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.bind(backend.connect_back.bind)
        exits: list[tuple[str, ContainerExit]] = []
        done = asyncio.Event()

        def on_exit(cid: str, exit: ContainerExit) -> None:
            exits.append((cid, exit))
            done.set()

        spec = ContainerSpec("fn-x", cid="c-test", connect=backend.connect_back.connect)
        backend.start(spec, on_exit)
        hello = await asyncio.wait_for(sock.recv_multipart(), 30)  # the container's first message
        alive = backend.alive("c-test")
        backend.stop("c-test", grace_s=5.0)
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0)  # a second report would come in this turn
        gone = not backend.alive("c-test")
        sock.close(0)
        ctx.term()
        return hello, exits, alive, gone

    hello, exits, alive, gone = asyncio.run(main())
    assert hello[0] == b"c-test" and json.loads(hello[2])["t"] == "hello"
    assert alive and gone
    assert len(exits) == 1 and exits[0][0] == "c-test"
    assert exits[0][1].cause.startswith(("it exited with code", "it was killed by signal")), exits[0][1]
    assert not (tmp_path / "c-test.sock").exists()  # its direct socket is gone with it
