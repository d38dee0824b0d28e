"""The container's side of a lease: one blocking caller's calls arrive on the container's own ROUTER.

While the daemon lends the container (``lease`` with a token), a call that reaches
the ROUTER carrying that token and finding the container idle is admitted: its id
goes into ``Outbox.direct_peers``, so its output and result go straight back to
that caller.  Any other call there is answered ``revoked`` and goes through the
daemon instead.  The daemon hears how the direct calls went (``lease_used``) at most
every ``LEASE_REPORT_S``, and once more when it takes the lease back (``revoke``,
answered ``released``).  Everything here runs on the I/O thread.
"""

from __future__ import annotations

import sys
import time

from ..protocol import framing
from ..protocol.framing import Payload
from ..protocol.messages.calls import CallMsg, ResultMsg, RevokedMsg
from ..protocol.messages.containers import LeaseTokenMsg, LeaseUsedMsg, ReleasedMsg, RevokeMsg
from .inputs import Work
from .outbox import Outbox

LEASE_REPORT_S = 1.0  # while leased, the daemon hears how direct calls went at most this often


class DirectLease:
    """The lease the container is under (if any), and the leaseholder's calls that it admits."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.token: str | None = None  # while leased: what the leaseholder's calls carry
        self.runs = 0  # direct calls since the last report to the daemon, and their run time
        self.us = 0
        self.reported = time.monotonic()
        self.last_done = time.monotonic()  # the end of the leaseholder's last call
        self.last_id = ""  # and its id: the holder learns which of its calls ran before the lease ended

    def receive(self, busy: bool) -> Work | None:
        """A leaseholder's call to run now, or None: answered ``revoked`` when it lacks the lease's token
        or the container is ``busy`` (inputs queued or running), or dropped when it is no call."""
        direct = self.outbox.direct
        assert direct is not None
        peer = direct.recv()  # a ROUTER's first frame, the sender's identity: always followed by its message
        try:
            header, payloads = framing.decode(framing.recv(direct))
            if header.get("t") != "call":
                return None
            msg = CallMsg.from_wire(header)
        except framing.WireError as exc:
            print(f"remotecell container: dropped a malformed direct message: {exc}", file=sys.__stderr__)
            return None
        if msg.token != self.token or self.token is None or busy:
            self.outbox.to_peer(peer, RevokedMsg(id=msg.id))
            return None
        self.outbox.direct_peers[msg.id] = peer
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
