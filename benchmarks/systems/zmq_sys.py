"""The floor: the least a function-shipping system over pyzmq + cloudpickle must do.

A DEALER socket bound on ipc://, two worker processes (this file run as a
script) whose DEALERs connect to it; DEALER round-robins the calls over them.
A call is [function key, cloudpickled function, task id, cloudpickled args,
*buffers] and its reply [task id, cloudpickled result, *buffers]; the worker
unpickles a function once per key, and large buffers travel as zero-copy
out-of-band frames (pickle protocol 5) both ways. ``map`` sends every task,
one message each, then collects the replies and puts them in order by task
id. No scheduling, retries or heartbeats: a floor, not a competitor.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle
import zmq

PACKAGES = ["pyzmq", "cloudpickle", "numpy"]
WORKERS = 2


def _socket(ctx: zmq.Context) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.sndhwm = sock.rcvhwm = 0
    sock.linger = 0
    return sock


def _dumps(obj: Any) -> list[Any]:
    """[pickle, *out-of-band buffers] frames for ``obj``."""
    buffers: list[pickle.PickleBuffer] = []
    payload = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [payload, *(b.raw() for b in buffers)]


def _loads(frames: list[zmq.Frame]) -> Any:
    return pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])


def worker(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = _socket(ctx)
    sock.connect(endpoint)
    sock.send(b"READY")
    functions: dict[bytes, Callable[..., Any]] = {}
    while True:
        frames = sock.recv_multipart(copy=False)
        key = frames[0].bytes
        if key == b"STOP":
            break
        if key not in functions:
            functions[key] = cloudpickle.loads(frames[1].bytes)
        result = functions[key](*_loads(frames[3:]))
        sock.send_multipart([frames[2], *_dumps(result)], copy=False)
    sock.close()
    ctx.term()


class Session:
    def __init__(self, code: Any) -> None:
        self.code = code
        self.ctx = zmq.Context()
        self.sock = _socket(self.ctx)
        self.dir = tempfile.mkdtemp(prefix="bench-zmq-")
        self.endpoint = f"ipc://{self.dir}/floor.sock"
        self.sock.bind(self.endpoint)
        self.procs: list[subprocess.Popen] = []
        self.functions: dict[Callable[..., Any], tuple[bytes, bytes]] = {}
        self.tasks = 0

    def start(self) -> None:
        self.procs = [
            subprocess.Popen([sys.executable, __file__, self.endpoint]) for _ in range(WORKERS)
        ]
        for _ in range(WORKERS):
            if not self.sock.poll(60_000) or self.sock.recv() != b"READY":
                raise TimeoutError("floor workers did not start")
        assert self.call(self.code.inc, 1) == 2

    def _function(self, fn: Callable[..., Any]) -> tuple[bytes, bytes]:
        if fn not in self.functions:
            self.functions[fn] = (str(id(fn)).encode(), cloudpickle.dumps(fn))
        return self.functions[fn]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        key, body = self._function(fn)
        self.tasks += 1
        self.sock.send_multipart([key, body, b"%d" % self.tasks, *_dumps(args)], copy=False)
        return _loads(self.sock.recv_multipart(copy=False)[1:])

    def map(self, xs: Iterable[int]) -> list[int]:
        key, body = self._function(self.code.inc)
        first = self.tasks + 1
        send = self.sock.send_multipart
        for x in xs:
            self.tasks += 1
            send([key, body, b"%d" % self.tasks, cloudpickle.dumps((x,), protocol=5)])
        out: list[Any] = [None] * (self.tasks + 1 - first)
        recv = self.sock.recv_multipart
        for _ in out:
            tid, payload, *buffers = recv()
            out[int(tid) - first] = pickle.loads(payload, buffers=buffers)
        return out

    def callers(self) -> dict[str, Callable[[int], Any]]:
        return {"main": lambda x: self.call(self.code.inc, x)}

    def identity(self, value: Any) -> Any:
        return self.call(self.code.identity, value)

    def tidy(self) -> None:
        pass

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for _ in self.procs:
            self.sock.send(b"STOP")  # round-robin: one each
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.sock.close()
        self.ctx.term()
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    worker(sys.argv[1])
