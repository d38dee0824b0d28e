"""The container's side of a lease: one blocking caller's calls arrive on the container's own Unix socket.

Leaseholders connect to the container's listening socket (``Outbox.direct``), one
connection per client thread, and speak ``protocol.stream``.  While the daemon lends
the container (``lease`` with a token), a call that comes carrying that token and
finding the container idle is admitted: its id goes into ``Outbox.direct_peers``, so
its output and result go straight back on that connection, which becomes the
``holder`` (the serve loop waits on it first).  Any other call there is answered
``revoked`` and goes through the daemon instead.  A connection that closes, breaks
or sends what is not a message is closed and forgotten.  The daemon hears how the
direct calls went (``lease_used``) at most every ``LEASE_REPORT_S``, and once more
when it takes the lease back (``revoke``, answered ``released``).  Everything here runs on the I/O thread.
"""

from __future__ import annotations

import sys
import time

import zmq

from ..protocol import framing, stream
from ..protocol.framing import Payload
from ..protocol.messages.calls import CallMsg, ResultMsg, RevokedMsg
from ..protocol.messages.containers import LeaseTokenMsg, LeaseUsedMsg, ReleasedMsg, RevokeMsg
from ..protocol.stream import StreamClosed, StreamConn
from .inputs import Work
from .outbox import Outbox

LEASE_REPORT_S = 1.0  # while leased, the daemon hears how direct calls went at most this often
LEASED_WAIT_MS = 2  # how long a read waits for the rest of a message (and the serve loop for the holder's next)
SEND_TIMEOUT_MS = 30_000  # a holder that stops reading a result for this long loses its connection


class DirectLease:
    """The lease the container is under (if any), and the leaseholder's calls that it admits."""

    def __init__(self, outbox: Outbox, poller: zmq.Poller) -> None:
        self.outbox = outbox
        self.poller = poller  # the serve loop's: the listening socket and every connection are in it
        self.conns: dict[int, StreamConn] = {}  # fd -> a leaseholder's connection
        self.holder: StreamConn | None = None  # the connection the lease's calls came on last
        outbox.peer_lost = self.drop
        if outbox.direct is not None:
            poller.register(outbox.direct.fileno(), zmq.POLLIN)
        self.token: str | None = None  # while leased: what the leaseholder's calls carry
        self.runs = 0  # direct calls since the last report to the daemon, and their run time
        self.us = 0
        self.reported = time.monotonic()
        self.last_done = time.monotonic()  # the end of the leaseholder's last call
        self.last_id = ""  # and its id: the holder learns which of its calls ran before the lease ended

    def accept(self) -> None:
        """A leaseholder connects (the listening socket was readable)."""
        listener = self.outbox.direct
        assert listener is not None
        conn = stream.accept(listener)
        if conn is None:  # it gave up meanwhile
            return
        conn.set_timeout(LEASED_WAIT_MS, SEND_TIMEOUT_MS)
        self.conns[conn.fileno()] = conn
        self.poller.register(conn.fileno(), zmq.POLLIN)

    def drop(self, conn: StreamConn) -> None:
        """Close and forget a connection (its holder closed it, or it broke)."""
        fd = conn.fileno()
        if self.conns.pop(fd, None) is not None:
            self.poller.unregister(fd)
        if self.holder is conn:
            self.holder = None
        conn.close()

    def receive(self, conn: StreamConn, busy: bool) -> Work | None:
        """A leaseholder's call to run now, or None: answered ``revoked`` when it lacks the lease's token
        or the container is ``busy`` (inputs queued or running), or dropped when it is no call.

        ``TimeoutError`` when no whole message came within ``LEASED_WAIT_MS`` (what came stays buffered).
        """
        try:
            header, payloads = framing.decode(conn.recv())
            if header.get("t") != "call":
                return None
            msg = CallMsg.from_wire(header)
        except StreamClosed:
            self.drop(conn)
            return None
        except framing.WireError as exc:  # the stream cannot be read on after a bad prefix: close it
            print(f"remotecell container: dropped a malformed direct message: {exc}", file=sys.__stderr__)
            self.drop(conn)
            return None
        if msg.token != self.token or self.token is None or busy:
            self.outbox.to_peer(conn, RevokedMsg(id=msg.id))
            return None
        self.holder = conn
        self.outbox.direct_peers[msg.id] = conn
        return msg, payloads

    def on_lease(self, msg: LeaseTokenMsg, payloads: list[Payload]) -> None:
        self.token = msg.token or None
        self.reported = self.last_done = time.monotonic()

    def on_revoke(self, msg: RevokeMsg, payloads: list[Payload]) -> None:
        """The daemon takes the lease back; a direct call still running finishes first (it runs on this thread)."""
        self.token = None
        self._report()
        self.outbox.send(ReleasedMsg(idle_s=time.monotonic() - self.last_done, last=self.last_id))

    def done(self, result: ResultMsg, payloads: list[Payload]) -> None:
        """A direct call's result goes to its leaseholder at once; the daemon hears of it about once a second."""
        outbox = self.outbox
        outbox.to_peer(outbox.direct_peers.pop(result.id), result, payloads)
        self.last_id = result.id
        self.last_done = now = time.monotonic()
        self.runs += 1
        self.us += result.run_us
        if now - self.reported >= LEASE_REPORT_S:
            self._report()

    def _report(self) -> None:
        if self.runs:
            self.outbox.send(LeaseUsedMsg(n=self.runs, us=self.us))
        self.runs = self.us = 0
        self.reported = time.monotonic()
