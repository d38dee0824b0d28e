"""Remote post-mortem: pdb in the frames a container holds after an input raised.

A container that held an input's traceback says so in the error (``ErrorInfo.debug``:
``CONTAINER:KEY``, ``debug_hold_s``) and tells the daemon how long it holds (``debug_held``,
so scale-down leaves it be). A client's ``debug`` carries one pdb command line (None: open
the session, the stack entry where it raised); the daemon passes it to that container
inside ``debug_in`` and the reply inside the container's ``debug_out`` back. The pdb text is plain
text both ways: nothing here is pickled.
"""

from __future__ import annotations

from ..message import Message, message, wire

OPEN = "open"  # the session goes on: send the next command
ENDED = "ended"  # the command ended the session (q); the frames stay held until their time is up
RELEASED = "released"  # no frames held under that key (any more): the text says why


@message("debug")
class DebugMsg(Message):
    """One pdb command for the frames held as ``target`` (``CONTAINER:KEY``); ``line`` None opens the session."""

    target: str
    line: str | None = None
    # opening: the text of the frames' source files as the client has them (a notebook's cells, files the
    # container cannot see), so ``l`` and the stack entries show source there
    sources: dict[str, str] = wire(factory=dict)


@message("reply")
class DebugReply(Message):
    """What pdb printed for the command, and whether the session goes on (``OPEN``, ``ENDED``, ``RELEASED``)."""

    text: str
    state: str


@message("debug_in")
class DebugInMsg(Message):
    """Daemon -> container: a client's ``debug`` request as it came; ``rid`` names the answer."""

    rid: str
    request: DebugMsg


@message("debug_out")
class DebugOutMsg(Message):
    """Container -> daemon: the answer to request ``rid``, passed on to the client as it is."""

    rid: str
    reply: DebugReply


@message("debug_held")
class DebugHeldMsg(Message):
    """Container -> daemon: it holds frames for ``hold_s`` seconds more (its idle time does not end it then)."""

    hold_s: float
