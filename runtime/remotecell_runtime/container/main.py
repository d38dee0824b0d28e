"""The container: the process that loads one function (or class) and runs its inputs.

It connects a DEALER socket to the daemon's container socket (ipc://), says
hello, receives its function once (``load``), then serves ``call`` messages.
This is the only place user payloads are unpickled on the runtime host.

It also listens on a Unix socket of its own (``--direct PATH``, in the runtime's
private socket folder; ``protocol.stream``): while the daemon lends the container to
one blocking caller (a *lease*), that caller's calls come straight here and their
output and results go straight back, two hops instead of four, and each without
ZeroMQ's I/O threads.  A call that arrives there without
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

The parts, each holding what it needs (imports point one way, down this list):
``inputs`` (what an input is and came to), ``streams`` (sys.stdout/sys.stderr),
``outbox`` (the sockets; sending from any thread), ``loading`` (the function),
``direct`` (the lease), ``running`` (running and reporting an input), ``batches``,
``cancelling`` and ``debugging`` (failed inputs' frames held, pdb in them).  This
module wires them, receives and dispatches by message
type; the hot path (a leaseholder's call, or the backlog) goes from the poll to
``Runner.run_sync`` without a hand-off.  While leased, the loop first waits a
moment (``LEASED_WAIT_MS``) for the holder's next call on the direct socket alone,
then polls everything: the daemon's messages wait that long at most.

A container never outlives its daemon: the kernel kills it with its parent
(``PR_SET_PDEATHSIG``; in a sandbox, bwrap's ``--die-with-parent``), and, since
both race with a daemon that dies while the container starts, the serve loop also
watches the cancel pipe, whose other end only the daemon holds, for its hang-up.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..protocol import framing, sharedmem
from ..protocol.framing import Payload
from ..protocol.image_spec import IN_CONTAINER_ENV
from ..protocol.message import Message
from ..protocol.messages.calls import CallMsg, CallsMsg
from ..protocol.messages.containers import (
    BatchMsg,
    CancelInputMsg,
    ContainerHelloMsg,
    LeaseTokenMsg,
    LoadMsg,
    RevokeMsg,
    StopMsg,
)
from ..protocol.messages.debug import DebugInMsg
from ..protocol.messages.web import WebInMsg
from ..protocol.stream import StreamConn
from .batches import Batches
from .cancelling import Canceller
from .debugging import Holds
from .direct import DirectLease
from .inputs import Terminated
from .loading import Loaded
from .outbox import Outbox
from .running import Runner
from .streams import Stream

RESULTS_PER_MESSAGE = 128  # a backlog's results are sent at least this often (the daemon refills in halves)


class ContainerLoop:
    """The container process's main loop: wires the parts, receives messages and hands each to its part."""

    def __init__(self, address: str, container_id: str, cancel_fd: int | None = None,
                 direct_address: str | None = None, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.id = container_id
        self.ctx = zmq.Context()
        self.outbox = Outbox(self.ctx, address, container_id, direct_address, curve)
        self.loaded = Loaded(self.outbox)
        self.poller = zmq.Poller()
        self.lease = DirectLease(self.outbox, self.poller)
        self.shm = sharedmem.ShmPool.local()
        self.runner = Runner(self.outbox, self.loaded, self.lease, self.shm)
        self.batches = Batches(self.runner)
        self.canceller = Canceller(self.runner, cancel_fd)
        self.holds = Holds(container_id, self.outbox)  # failed inputs' frames, for a remote post-mortem
        self.runner.hold = self.holds.hold
        self.running = True
        # The daemon, or in a sandbox bwrap's init (pid 1 there): once it is gone we are reparented.
        self.parent = os.getppid()
        table: dict[type[Message], Callable[[Any, list[Payload]], None]] = {
            LoadMsg: self.loaded.on_load,
            CallMsg: self.runner.on_call,
            CallsMsg: self.runner.on_calls,
            BatchMsg: self.batches.on_batch,
            CancelInputMsg: self.canceller.on_cancel,
            StopMsg: self.on_stop,
            LeaseTokenMsg: self.lease.on_lease,
            RevokeMsg: self.lease.on_revoke,
            WebInMsg: self.on_web_in,
            DebugInMsg: self.holds.on_debug,
        }
        # By type name: a header is read as its class, then handed to its part.
        self.handlers = {cls.TYPE: (cls, handler) for cls, handler in table.items()}

    def serve(self) -> None:
        outbox, backlog = self.outbox, self.runner.backlog  # neither is ever rebound: read once, not per message
        sock, wake_r = outbox.sock, outbox.wake_r
        listener = outbox.direct.fileno() if outbox.direct is not None else None
        outbox.send(ContainerHelloMsg(cid=self.id, pid=os.getpid()))
        poller, lease = self.poller, self.lease
        poller.register(sock, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        lifeline = self.canceller.cancel_fd
        if lifeline is not None:  # only the daemon holds its other end: it closes when the daemon is gone
            poller.register(lifeline, zmq.POLLERR)  # (POLLERR: the hang-up alone, not the cancels written to it)
        while self.running:
            if backlog:
                self._run_backlog()
                continue
            outbox.flush_results()
            holder = lease.holder
            if lease.token is not None and holder is not None and self._receive_direct(holder):
                continue  # leased: the holder's next call came, waited for on its connection alone
            ready = dict(poller.poll(1000))
            if lifeline in ready or (not ready and os.getppid() != self.parent):  # the daemon is gone
                return
            if wake_r in ready:
                outbox.drain()
            if sock in ready:
                self._receive()
            for fd in ready:
                conn = lease.conns.get(fd)  # (zmq sockets are keys of ready too: no conn)
                if conn is not None:
                    self._receive_direct(conn)
            if listener in ready:
                lease.accept()

    def _run_backlog(self) -> None:
        """Run the next queued input, reading what arrived meanwhile (cancels, more inputs) first."""
        outbox, backlog = self.outbox, self.runner.backlog
        while int(outbox.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            self._receive()
        if not outbox.queue.empty():
            outbox.drain()
        if not backlog:
            return
        msg, payloads = backlog.popleft()
        self.runner.run_sync(self.loaded.methods[msg.method], msg, payloads)
        if not backlog or len(outbox.results) >= RESULTS_PER_MESSAGE:
            outbox.flush_results()

    def _receive(self) -> None:
        frames = framing.recv(self.outbox.sock)
        try:
            header, payloads = framing.decode(frames)
            route = self.handlers.get(header["t"])
            if route is None:
                print(f"remotecell container: unknown message type {header['t']!r}", file=sys.__stderr__)
                return
            cls, handler = route
            msg = cls.from_wire(header)
        except framing.WireError as exc:
            print(f"remotecell container: dropped a malformed message: {exc}", file=sys.__stderr__)
            return
        handler(msg, payloads)

    def _receive_direct(self, conn: StreamConn) -> bool:
        """A leaseholder's call that the lease admits: run now, on this thread when its function runs inline.

        False when no whole message came within ``LEASED_WAIT_MS``: while leased, the serve loop waits
        for the holder's next call on its connection alone first, a blocking read where a poll of every
        socket costs a warm call several syscalls; the daemon's messages and the wake-up pipe wait that
        long at most, then the poll.
        """
        runner = self.runner
        while True:
            try:
                work = self.lease.receive(conn, busy=bool(runner.backlog or runner.running_inputs))
            except TimeoutError:
                return False
            if work is not None:
                msg, payloads = work
                method = self.loaded.inline.get(msg.method)
                if method is not None:
                    runner.run_sync(method, msg, payloads)  # the hot path: no hand-off, no backlog
                else:
                    runner.on_call(msg, payloads)
            if not conn.pending() or conn.fileno() not in self.lease.conns:
                return True  # (a next message read along with this one is not seen by the poll)

    def on_web_in(self, msg: WebInMsg, payloads: list[Payload]) -> None:
        for web in self.loaded.webs.values():  # (the one whose websocket it is takes it)
            web.deliver(msg, payloads)

    def on_stop(self, msg: StopMsg, payloads: list[Payload]) -> None:
        self.running = False


def _launch_line(fd: int) -> dict[str, str]:
    """Wait for the launch line on ``fd``: this container's options, and the variables that differ from the
    spare's (set here, before anything reads them); the end of the pipe unused means the runtime is done."""
    data = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while not data.endswith(b"\n") and (chunk := pipe.read(65536)):
            data += chunk
    if not data.endswith(b"\n"):
        sys.exit(0)
    launch = json.loads(data)
    for key in launch["unset"]:
        os.environ.pop(key, None)
    os.environ.update(launch["env"])
    args = launch["args"]
    return dict(zip(args[::2], args[1::2], strict=True))


def _die_with_parent() -> None:
    try:  # Linux: the kernel kills us if the daemon dies, even mid-input
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def _curve_keys(options: dict[str, str]) -> tuple[bytes, bytes, bytes] | None:
    """``--server-key KEY --key-fd FD``: the daemon's public key, and our key pair read from a pipe (a secret
    is never on a command line, where any user of the host could read it)."""
    if "--server-key" not in options:
        return None
    with os.fdopen(int(options["--key-fd"]), "rb") as pipe:
        public, secret = pipe.read().split()[:2]
    return options["--server-key"].encode(), public, secret


def main(argv: list[str] | None = None) -> None:
    # Started only by the daemon, as `--connect ADDR --id ID`; argparse would add 10 ms to every cold start.
    args = sys.argv[1:] if argv is None else argv
    try:
        options = dict(zip(args[::2], args[1::2], strict=True))
        if "--spare-fd" in options:  # a spare (``backends/spares.py``): who it is comes when it is given out
            _die_with_parent()
            options.update(_launch_line(int(options.pop("--spare-fd"))))
        address, container_id = options["--connect"], options["--id"]
        cancel_fd = int(options["--cancel-fd"]) if "--cancel-fd" in options else None
        curve = _curve_keys(options)
    except (KeyError, ValueError):
        sys.exit("usage: python -m remotecell_runtime.container --connect ADDR --id ID [--cancel-fd FD] "
                 "[--direct ADDR] [--server-key KEY --key-fd FD] (started by the runtime)")
    os.environ[IN_CONTAINER_ENV] = "1"  # before user code: its imports may ask (Image.imports)
    _die_with_parent()
    if cancel_fd is not None:
        os.set_blocking(cancel_fd, False)
    container = ContainerLoop(address, container_id, cancel_fd, options.get("--direct"), curve)
    sys.stdout = Stream(container.outbox.send, "stdout", sys.__stdout__)
    sys.stderr = Stream(container.outbox.send, "stderr", sys.__stderr__)
    signal.signal(signal.SIGINT, container.canceller.on_sigint)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    threading.current_thread().name = f"container-{container_id}"
    try:
        container.serve()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        container.loaded.run_exit_hooks()
        container.shm.clear()
