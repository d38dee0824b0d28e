"""The floor: the least a function-shipping system over pyzmq + cloudpickle must do.

A DEALER socket bound on ipc://, two worker processes (this file run as a
script) whose DEALERs connect to it; DEALER round-robins the calls over them.
A call is [function key, cloudpickled function, task id, cloudpickled args,
*buffers] and its reply [task id, cloudpickled result, *buffers]; the worker
unpickles a function once per key, and large buffers travel as zero-copy
out-of-band frames (pickle protocol 5) both ways. ``map`` sends one message
per task with at most ``MAP_IN_FLIGHT`` unanswered, and puts the replies in
order by task id. No scheduling, retries or heartbeats: a floor, not a competitor.

The spawn floor is a store process (this file run with ``store``): a durable
spawn is one hop to it and one SQLite WAL commit of the call's row before it
answers; a ``spawn_map`` message of ``SPAWN_BATCH`` calls is one commit. The
calls run when their results are asked for (outside the timed region).
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cloudpickle
import zmq

PACKAGES = ["pyzmq", "cloudpickle", "numpy"]
WORKERS = 2
MAP_IN_FLIGHT = 1_000  # as remotecell's map: at most this many tasks unanswered
SPAWN_WINDOW = 1_000  # spawn "gather": requests in flight, as remotecell_sys's
SPAWN_BATCH = 500  # spawn "spawn_map": calls per message (one commit), as remotecell's spawn_map


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


def store(endpoint: str, db_path: str) -> None:
    """The spawn floor's store: commit each message's calls, then answer; run them when asked for results."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # as remotecell's job store
    db.execute("CREATE TABLE calls (id INTEGER PRIMARY KEY, args BLOB)")
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    fn: Callable[..., Any] | None = None
    while True:
        ident, kind, *frames = sock.recv_multipart()
        if kind == b"F":
            fn = cloudpickle.loads(frames[0])
            reply = [b"ok"]
        elif kind == b"S":  # frames: id, args, id, args, ...
            db.execute("BEGIN")
            db.executemany("INSERT INTO calls VALUES (?, ?)", zip(map(int, frames[::2]), frames[1::2], strict=True))
            db.execute("COMMIT")
            reply = [frames[-2]]
        elif kind == b"G" and fn is not None:
            rows = db.execute("SELECT args FROM calls ORDER BY id").fetchall()
            db.execute("DELETE FROM calls")
            reply = [pickle.dumps([fn(*pickle.loads(args)) for (args,) in rows])]
        else:
            break
        sock.send_multipart([ident, *reply])


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
        send, recv = self.sock.send_multipart, self.sock.recv_multipart
        results: dict[int, Any] = {}
        in_flight = 0

        def take_one() -> None:
            tid, payload, *buffers = recv()
            results[int(tid) - first] = pickle.loads(payload, buffers=buffers)

        for x in xs:
            if in_flight == MAP_IN_FLIGHT:
                take_one()
                in_flight -= 1
            self.tasks += 1
            send([key, body, b"%d" % self.tasks, cloudpickle.dumps((x,), protocol=5)])
            in_flight += 1
        for _ in range(in_flight):
            take_one()
        return [results[i] for i in range(len(results))]

    @contextlib.contextmanager
    def spawners(self) -> Iterator[dict[str, Callable[[int], Callable[[], list[int]]]]]:
        endpoint = f"ipc://{self.dir}/store.sock"
        proc = subprocess.Popen([sys.executable, __file__, "store", endpoint, f"{self.dir}/jobs.db"])
        sock = _socket(self.ctx)
        sock.connect(endpoint)
        sock.send_multipart([b"F", cloudpickle.dumps(self.code.inc)])
        if not sock.poll(60_000):
            raise TimeoutError("the spawn floor's store did not start")
        sock.recv()

        def collect() -> list[int]:
            sock.send(b"G")
            return pickle.loads(sock.recv())

        def spawn(n: int, per_message: int, in_flight: int) -> Callable[[], list[int]]:
            unanswered = 0
            for start in range(0, n, per_message):
                if unanswered == in_flight:
                    sock.recv()
                    unanswered -= 1
                calls = range(start, min(start + per_message, n))
                sock.send_multipart([b"S", *(f for i in calls for f in (b"%d" % i, pickle.dumps((i,))))])
                unanswered += 1
            for _ in range(unanswered):
                sock.recv()
            return collect

        try:
            yield {"sequential": lambda n: spawn(n, 1, 1), "gather": lambda n: spawn(n, 1, SPAWN_WINDOW),
                   "spawn_map": lambda n: spawn(n, SPAWN_BATCH, 1)}
        finally:
            sock.send(b"Q")
            proc.wait(timeout=10)
            sock.close()

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
    if sys.argv[1] == "store":
        store(sys.argv[2], sys.argv[3])
    else:
        worker(sys.argv[1])
