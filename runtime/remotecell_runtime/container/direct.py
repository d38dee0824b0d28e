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
from typing import Any

from ..protocol import framing
from ..protocol.framing import Payload
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
        peer, *frames = framing.recv(direct)
        try:
            header, payloads = framing.decode(frames)
        except framing.WireError as exc:
            print(f"remotecell container: dropped a malformed direct message: {exc}", file=sys.__stderr__)
            return None
        input_id = header.get("id")
        if header["t"] != "call" or not isinstance(input_id, str):
            return None
        if header.get("token") != self.token or self.token is None or busy:
            framing.send(direct, [peer.bytes, *framing.encode({"t": "revoked", "id": input_id})])
            return None
        self.outbox.direct_peers[input_id] = peer.bytes
        return header, payloads

    def on_lease(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        self.token = str(header.get("token") or "") or None
        self.reported = self.last_done = time.monotonic()

    def on_revoke(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        """The daemon takes the lease back; a direct call still running finishes first (it runs on this thread)."""
        self.token = None
        self._report()
        self.outbox.send({"t": "released", "idle_s": time.monotonic() - self.last_done, "last": self.last_id})

    def done(self, header: dict[str, Any], payloads: list[Payload]) -> None:
        """A direct call's result goes to its leaseholder at once; the daemon hears of it about once a second."""
        self.outbox.send(header, payloads)
        del self.outbox.direct_peers[header["id"]]
        self.last_id = header["id"]
        self.last_done = time.monotonic()
        self.runs += 1
        self.us += int(header.get("us", 0))
        if time.monotonic() - self.reported >= LEASE_REPORT_S:
            self._report()

    def _report(self) -> None:
        if self.runs:
            self.outbox.send({"t": "lease_used", "n": self.runs, "us": self.us})
        self.runs = self.us = 0
        self.reported = time.monotonic()
