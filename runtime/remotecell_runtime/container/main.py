"""The container: the process that loads one function and runs its inputs.

It connects a DEALER socket to the daemon's container socket (ipc://), says
hello, receives its function once (``load``), then serves ``input`` messages.
This is the only place user payloads are unpickled on the runtime host.

A sync function with one input at a time runs on the I/O thread itself: no
thread hand-off on the hot path.  What it prints streams back to the caller
as ``output`` messages ahead of its ``result``; the daemon cancels the running
input with SIGINT and escalates to SIGTERM/SIGKILL when it does not stop.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import zmq
from remotecell import _wire
from remotecell._wire import Payload

_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Cancelled(BaseException):
    """Raised inside user code when the daemon cancels the running input."""


class _Stream:
    """sys.stdout/sys.stderr stand-in: lines written during an input go to its caller."""

    def __init__(self, container: Container, name: str, fallback: Any) -> None:
        self.container = container
        self.name = name
        self.fallback = fallback
        self.pending: list[str] = []
        self.pending_chars = 0

    def write(self, text: str) -> int:
        if self.container.current is None:
            return int(self.fallback.write(text))
        self.pending.append(text)
        self.pending_chars += len(text)
        if "\n" in text or "\r" in text or self.pending_chars > 8192:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if not self.pending:
            self.fallback.flush()
            return
        text, self.pending, self.pending_chars = "".join(self.pending), [], 0
        # Also into the process's own pipe: the daemon keeps its last lines, which must
        # survive a crash that loses the message still queued in the socket.
        self.fallback.write(text)
        self.fallback.flush()
        if self.container.current is not None:
            self.container.send({"t": "output", "id": self.container.current, "stream": self.name, "text": text})

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"

    def fileno(self) -> int:
        return int(self.fallback.fileno())


class Container:
    def __init__(self, address: str, container_id: str) -> None:
        self.id = container_id
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.identity = container_id.encode()
        self.sock.linger = 2000
        self.sock.connect(address)
        self.fn: Callable[..., Any] | None = None
        self.current: str | None = None  # id of the input running now
        self.held: list[list[Any]] = []  # shared-memory segments of that input
        self.shm = _wire.ShmPool.local()
        self.running = True
        self.handlers: dict[str, Callable[[dict[str, Any], list[Payload]], None]] = {
            "load": self.on_load,
            "call": self.on_input,
            "stop": self.on_stop,
        }

    def send(self, header: dict[str, Any], payloads: list[Payload] | tuple[()] = ()) -> None:
        _wire.send(self.sock, _wire.encode(header, payloads))

    def serve(self) -> None:
        self.send({"t": "hello", "cid": self.id, "pid": os.getpid()})
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while self.running:
            if not poller.poll(1000):
                if os.getppid() == 1:  # the daemon is gone
                    return
                continue
            frames = _wire.recv(self.sock)
            try:
                header, payloads = _wire.decode(frames)
            except _wire.WireError as exc:
                print(f"remotecell container: dropped a malformed message: {exc}", file=sys.__stderr__)
                continue
            handler = self.handlers.get(header["t"])
            if handler is None:
                print(f"remotecell container: unknown message type {header['t']!r}", file=sys.__stderr__)
                continue
            handler(header, payloads)

    # -- handlers -----------------------------------------------------------------------------

    def on_load(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        try:
            self.fn = _wire.deserialize(payloads[0])
        except BaseException as exc:
            header = {"t": "load_failed"}
            self.send(header, _describe_error(header, exc, "loading the function failed"))
            return
        self.send({"t": "ready"})

    def on_input(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        input_id = header["id"]
        self.current = input_id
        self.held = payloads[0].shm if payloads else []
        started = time.monotonic()
        try:
            args, kwargs = _wire.deserialize(payloads[0], hold=True)
            assert self.fn is not None
            value = self.fn(*args, **kwargs)
        except Cancelled:
            self._finish(input_id, {"t": "result", "id": input_id, "status": "cancelled"})
            return
        except BaseException as exc:
            result = {"t": "result", "id": input_id}
            self._finish(input_id, result, _describe_error(result, exc))
            return
        use_shm = bool(header.get("shm")) and _wire.ShmPool.available()
        try:
            payload = _wire.serialize(value, self.shm if use_shm else None)
        except BaseException as exc:
            err = _wire_error(
                "SerializationError",
                f"the return value of type {_type_name(value)} cannot be pickled: {exc}",
            )
            self._finish(input_id, {"t": "result", "id": input_id, "status": "error", "error": err})
            return
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        self._finish(input_id, {"t": "result", "id": input_id, "status": "ok", "ms": duration_ms}, [payload])

    def _finish(self, input_id: str, header: dict[str, Any], payloads: list[Payload] | None = None) -> None:
        for stream in (sys.stdout, sys.stderr):
            if getattr(stream, "pending", True):
                stream.flush()
        self.current = None
        # The input's shared memory is ours only when it succeeded; else the runtime may retry it.
        self.shm.settle(self.held, keep=header["status"] == "ok")
        self.send(header, payloads or ())

    def on_stop(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        self.running = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.current is not None:
            raise Cancelled()


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__qualname__


def _wire_error(type_name: str, message: str, tb: str = "") -> dict[str, str]:
    return {"type": type_name, "message": message, "traceback": tb}


def _describe_error(header: dict[str, Any], exc: BaseException, context: str = "") -> list[Payload]:
    """Describe ``exc`` in the header; the exception itself is the payload when it pickles."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = f"{context}: {exc}" if context else str(exc)
    header.update(status="error", error=_wire_error(_type_name(exc), message, tb))
    header["error"]["frames"] = [
        [f.filename, f.lineno, f.name, f.line or ""]
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(_RUNTIME_DIR)
    ]
    exc.__traceback__ = None
    try:
        return [_wire.serialize(exc)]
    except BaseException:
        return []


def _die_with_parent() -> None:
    try:  # Linux: the kernel kills us if the daemon dies, even mid-input
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m remotecell_runtime.container")
    parser.add_argument("--connect", required=True)
    parser.add_argument("--id", required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    container = Container(args.connect, args.id)
    sys.stdout = _Stream(container, "stdout", sys.__stdout__)
    sys.stderr = _Stream(container, "stderr", sys.__stderr__)
    signal.signal(signal.SIGINT, container.on_sigint)
    threading.current_thread().name = f"container-{args.id}"
    try:
        container.serve()
    finally:
        container.shm.clear()
