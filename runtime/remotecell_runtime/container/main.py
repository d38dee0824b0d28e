"""The container: the process that loads one function (or class) and runs its inputs.

It connects a DEALER socket to the daemon's container socket (ipc://), says
hello, receives its function once (``load``), then serves ``call`` messages.
This is the only place user payloads are unpickled on the runtime host.

It also binds a ROUTER of its own (``--direct``, in the runtime's private socket
folder): while the daemon lends the container to one blocking caller (a
*lease*), that caller's calls come straight here and their output and results
go straight back, two hops instead of four.  A call that arrives there without
the current lease's token is answered ``revoked``, and the caller goes through
the daemon instead.

How an input runs depends on the function:

- sync, one input at a time: on the I/O thread itself, no thread hand-off on
  the hot path.  The daemon may send several inputs ahead (a ``calls`` message)
  when the function is fast; they wait in a backlog, and their results go back
  many to a ``results`` message.  To cancel, the daemon writes the input's id
  to the cancel pipe and sends SIGINT; the handler raises only if that input is
  the one running (a queued one is skipped when its turn comes);
- sync with ``@rc.concurrent(max_inputs=N)``: on N worker threads;
- ``async def``: as tasks on an event loop thread, up to N at once.

Worker threads hand their messages to the I/O thread through an outbox and a
wake-up pipe (a zmq socket is not thread-safe).  What user code prints goes to
its own input's caller: the current input is a context variable, so threads and
tasks each see their own.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..protocol import framing, pickling, sharedmem
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from .direct import DirectLease
from .inputs import CURRENT, Cancelled, Returned, Terminated, describe_error, outcome_of, type_name
from .loading import Loaded
from .outbox import Outbox
from .running import Runner
from .streams import Stream

RESULTS_PER_MESSAGE = 128  # a backlog's results are sent at least this often (the daemon refills in halves)


class ContainerLoop:
    """The container process's main loop: loads the function once, serves inputs, reports results."""

    def __init__(self, address: str, container_id: str, cancel_fd: int | None = None,
                 direct_address: str | None = None) -> None:
        self.id = container_id
        self.ctx = zmq.Context()
        self.outbox = Outbox(self.ctx, address, container_id, direct_address)
        self.loaded = Loaded(self.outbox)
        self.lease = DirectLease(self.outbox)
        self.shm = sharedmem.ShmPool.local()
        self.runner = Runner(self.outbox, self.loaded, self.lease, self.shm)
        self.running = True
        self.cancel_fd = cancel_fd
        self.batch_params: dict[Any, list[inspect.Parameter]] = {}  # method name -> its parameters
        self.handlers: dict[str, Callable[[dict[str, Any], list[Payload]], None]] = {
            "load": self.loaded.on_load,
            "call": self.runner.on_call,
            "calls": self.runner.on_calls,
            "batch": self.on_batch,
            "cancel": self.on_cancel,
            "stop": self.on_stop,
            "lease": self.lease.on_lease,
            "revoke": self.lease.on_revoke,
        }

    # -- the I/O loop -------------------------------------------------------------------------

    def serve(self) -> None:
        self.outbox.send({"t": "hello", "cid": self.id, "pid": os.getpid()})
        poller = zmq.Poller()
        poller.register(self.outbox.sock, zmq.POLLIN)
        poller.register(self.outbox.wake_r, zmq.POLLIN)
        if self.outbox.direct is not None:
            poller.register(self.outbox.direct, zmq.POLLIN)
        while self.running:
            if self.runner.backlog:
                self._run_backlog()
                continue
            self.outbox.flush_results()
            ready = dict(poller.poll(1000))
            if not ready and os.getppid() == 1:  # the daemon is gone
                return
            if self.outbox.wake_r in ready:
                self.outbox.drain()
            if self.outbox.sock in ready:
                self._receive()
            if self.outbox.direct in ready:
                self._receive_direct()

    def _run_backlog(self) -> None:
        """Run the next queued input, reading what arrived meanwhile (cancels, more inputs) first."""
        while int(self.outbox.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            self._receive()
        if not self.outbox.queue.empty():
            self.outbox.drain()
        if not self.runner.backlog:
            return
        header, payloads = self.runner.backlog.popleft()
        self.runner.run_sync(self.loaded.methods[header.get("m")], header, payloads)
        if not self.runner.backlog or len(self.outbox.results) >= RESULTS_PER_MESSAGE:
            self.outbox.flush_results()

    def _receive(self) -> None:
        frames = framing.recv(self.outbox.sock)
        try:
            header, payloads = framing.decode(frames)
        except framing.WireError as exc:
            print(f"remotecell container: dropped a malformed message: {exc}", file=sys.__stderr__)
            return
        handler = self.handlers.get(header["t"])
        if handler is None:
            print(f"remotecell container: unknown message type {header['t']!r}", file=sys.__stderr__)
            return
        handler(header, payloads)

    def _receive_direct(self) -> None:
        """A leaseholder's call, admitted by the lease: run it now."""
        work = self.lease.receive(busy=bool(self.runner.backlog or self.runner.running_inputs))
        if work is None:
            return
        header, payloads = work
        loaded = self.loaded
        method = loaded.methods.get(header.get("m"))
        if method is not None and loaded.threads is None and header.get("m") not in loaded.loop_methods:
            self.runner.run_sync(method, header, payloads)  # the hot path: no hand-off, no backlog
        else:
            self.runner.on_call(header, payloads)

    # -- batches (@rc.batched) ----------------------------------------------------------------

    def on_batch(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        """Call the function once for the batch, with one list per parameter; answer per input."""
        method = self.loaded.methods.get(header.get("m"))
        if method is None or len(payloads) != len(header["ids"]):
            exc = self.loaded.no_method(header) if method is None else ValueError(
                f"a batch of {len(header['ids'])} ids came with {len(payloads)} payloads")
            self._report_batch(method, header, payloads, list(range(len(payloads))), exc)
            return
        self.runner.start(method, self._run_batch_async, self._run_batch_sync,
                    lambda work: self._run_batch_sync(method, *work), header, payloads)

    def _run_batch_sync(self, method: Callable[..., Any], header: dict[str, Any], payloads: list[Payload]) -> None:
        token = CURRENT.set(header["ids"][0])  # what a batch prints goes to the caller of its first input
        try:
            live, args, kwargs = self._unpack_batch(method, header, payloads)
            outcome: Any = None
            if live:
                try:
                    outcome = Returned(method(*args, **kwargs))
                except Terminated:
                    raise
                except BaseException as exc:
                    outcome = exc
            self.outbox.on_io(lambda: self._report_batch(method, header, payloads, live, outcome))
        finally:
            CURRENT.reset(token)

    async def _run_batch_async(self, method: Callable[..., Any], header: dict[str, Any],
                               payloads: list[Payload]) -> None:

        CURRENT.set(header["ids"][0])  # this task's own context
        live, args, kwargs = self._unpack_batch(method, header, payloads)
        outcome = await outcome_of(method(*args, **kwargs)) if live else None
        self.outbox.on_io(lambda: self._report_batch(method, header, payloads, live, outcome))

    def _unpack_batch(self, method: Callable[..., Any], header: dict[str, Any], payloads: list[Payload],
                      ) -> tuple[list[int], list[list[Any]], dict[str, list[Any]]]:
        """Each input's (args, kwargs) bound to the parameters, as one list per parameter.

        An input that does not unpickle or does not fit the signature fails alone, at once;
        the others go on. Returns the indexes of the inputs that made it, and the lists.
        """
        params = self.batch_params.get(header.get("m"))
        if params is None:
            params = self.batch_params[header.get("m")] = list(inspect.signature(method).parameters.values())
        positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        args: list[list[Any]] = [[] for _ in positional]
        kwargs: dict[str, list[Any]] = {p.name: [] for p in keyword}
        live = []
        for index, (input_id, payload) in enumerate(zip(header["ids"], payloads, strict=True)):
            try:
                call_args, call_kwargs = pickling.deserialize(payload, hold=True)
                if not call_kwargs and not keyword and len(call_args) == len(positional):
                    values = list(call_args)  # the common case: one positional item per parameter
                else:
                    bound = inspect.Signature(params).bind(*call_args, **call_kwargs).arguments
                    values = [bound[p.name] for p in positional]
                    for p in keyword:
                        kwargs[p.name].append(bound[p.name])
            except Terminated:
                raise
            except BaseException as exc:
                result = {"t": "result", "id": input_id}
                self.runner.finish(input_id, [payload], result, describe_error(result, exc))
                continue
            for column, value in zip(args, values, strict=True):
                column.append(value)
            live.append(index)
        return live, args, kwargs

    def _report_batch(self, method: Callable[..., Any] | None, header: dict[str, Any], payloads: list[Payload],
                      live: list[int], outcome: Any) -> None:
        """One result per input of the batch: its item of the returned list, or the batch's error."""
        ids, shm = header["ids"], header.get("shm") or []
        if isinstance(outcome, Returned):
            problem = _contract_problem(outcome.value, len(live))
            if problem is None:
                for index, value in zip(live, outcome.value, strict=True):
                    use_shm = {"shm": bool(shm[index]) if index < len(shm) else False}
                    self.runner.succeed({"t": "result", "id": ids[index]}, use_shm, [payloads[index]], value)
                return
            name = getattr(method, "__qualname__", "the batched function")
            error = {"type": ErrorName.BATCH_CONTRACT, "message": f"{name} {problem}", "traceback": ""}
            for index in live:
                result = {"t": "result", "id": ids[index], "status": "error", "error": error}
                self.runner.finish(ids[index], [payloads[index]], result)
        elif isinstance(outcome, Cancelled):
            for index in live:
                cancelled = {"t": "result", "id": ids[index], "status": "cancelled"}
                self.runner.finish(ids[index], [payloads[index]], cancelled)
        elif outcome is not None:
            described: dict[str, Any] = {"t": "result"}
            error_payloads = describe_error(described, outcome)  # once: every input gets the same error
            for index in live:
                self.runner.finish(ids[index], [payloads[index]], dict(described, id=ids[index]), error_payloads)

    # -- cancelling and stopping --------------------------------------------------------------

    def on_cancel(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        self.runner.cancelled.add(str(header.get("id", "")))  # in case it has not started yet
        runner = self.runner.running_inputs.get(header.get("id", ""))
        if self.loaded.loop is not None and hasattr(runner, "cancel"):  # an asyncio task
            self.loaded.loop.call_soon_threadsafe(runner.cancel)  # type: ignore[union-attr]
        elif isinstance(runner, int) and runner != self.outbox.io_thread:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(runner), ctypes.py_object(Cancelled))

    def on_sigint(self, signum: int, frame: Any) -> None:
        """Cancel the input named on the cancel pipe if it runs here; no name: whatever runs (a stop)."""
        named = self._read_cancel_pipe()
        self.runner.cancelled |= named
        current = CURRENT.get()
        if current is not None and (not named or current in named):  # it runs on this (the I/O) thread
            raise Cancelled()

    def _read_cancel_pipe(self) -> set[str]:
        if self.cancel_fd is None:
            return set()
        data = b""
        try:
            while chunk := os.read(self.cancel_fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        return {line for line in data.decode(errors="replace").split("\n") if line}

    def on_stop(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        self.running = False

def _contract_problem(value: Any, n: int) -> str | None:
    """What is wrong with a batched function's return value for ``n`` inputs, or None."""
    if not isinstance(value, list):
        try:
            size = f" of length {len(value)}"
        except TypeError:  # no length (or a 0-d tensor)
            size = ""
        return (f"returned {type_name(value)}{size} instead of a list of {n} results (one per input, in "
                "order); return a list, e.g. list(outputs)")
    if len(value) != n:
        return (f"returned a list of {len(value)} results for a batch of {n} inputs; it must return "
                "one result per input, in order")
    return None


def _die_with_parent() -> None:
    try:  # Linux: the kernel kills us if the daemon dies, even mid-input
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def main(argv: list[str] | None = None) -> None:
    # Started only by the daemon, as `--connect ADDR --id ID`; argparse would add 10 ms to every cold start.
    args = sys.argv[1:] if argv is None else argv
    try:
        options = dict(zip(args[::2], args[1::2], strict=True))
        address, container_id = options["--connect"], options["--id"]
        cancel_fd = int(options["--cancel-fd"]) if "--cancel-fd" in options else None
    except (KeyError, ValueError):
        sys.exit("usage: python -m remotecell_runtime.container --connect ADDR --id ID [--cancel-fd FD] "
                 "[--direct ADDR] (started by the runtime)")
    _die_with_parent()
    if cancel_fd is not None:
        os.set_blocking(cancel_fd, False)
    container = ContainerLoop(address, container_id, cancel_fd, options.get("--direct"))
    sys.stdout = Stream(container.outbox.send, "stdout", sys.__stdout__)
    sys.stderr = Stream(container.outbox.send, "stderr", sys.__stderr__)
    signal.signal(signal.SIGINT, container.on_sigint)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    threading.current_thread().name = f"container-{container_id}"
    try:
        container.serve()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        container.loaded.run_exit_hooks()
        container.shm.clear()
