"""``rc.debug()`` and the kernel's ``%debug``: pdb in the frames of a remote exception, in its container.

The container that raised holds the frames for ``REMOTECELL_DEBUG_HOLD_S`` seconds (300 by
default; set it in the function's environment, e.g. ``secrets=[rc.Secret.from_dict(...)]``,
or the runtime's); each command line goes there as text over this process's connection to
the runtime (tcp/CURVE too) and pdb's text comes back. After the hold time the command says
the frames were released.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from remotecell_runtime.protocol.messages.debug import OPEN, RELEASED, DebugMsg, DebugReply

from . import _client, _post_mortem

COMMAND_TIMEOUT_S = 90.0  # the runtime gives up on a command after 60 s; this side waits a little longer


def debug(exc: BaseException | None = None, commands: Iterable[str] | None = None) -> None:
    """Open pdb in the remote frames of ``exc`` (default: the last remote exception): ``p``, ``pp``, ``l``,
    ``u``/``d``, ``w``, ``a``, ``!stmt``, ``q``.

    Commands are read from ``input()`` (the notebook's input box in a kernel), or taken from
    ``commands`` when given (the session ends after the last one).

    >>> try:
    ...     divide.remote(1, 0)
    ... except ZeroDivisionError as e:
    ...     rc.debug(e, commands=["p a, b", "up", "q"])
    ZeroDivisionError: division by zero
    > /work/job.py(7)divide()
    -> return a / b
    (Pdb) p a, b
    (1, 0)
    """
    frames = _post_mortem.find(exc)
    if frames is None:
        what = f"this {type(exc).__name__}" if exc is not None else "the last exception"
        print(f"remotecell: {what} has no remote frames to debug: it was raised here, or its container did not "
              "hold them (REMOTECELL_DEBUG_HOLD_S=0, or a failure that never reached user code)", file=sys.stderr)
        return
    debug_frames(frames, commands)


def debug_frames(frames: _post_mortem.RemoteFrames, commands: Iterable[str] | None = None) -> None:
    """The pdb session in ``frames``, to its end (``q``, the last of ``commands``, or a release)."""
    reply = _ask(frames, None)
    lines = _lines(commands)
    while reply.state == OPEN:
        try:
            line = next(lines)
        except StopIteration:
            line = "q"
        reply = _ask(frames, line)


def _lines(commands: Iterable[str] | None) -> Iterator[str]:
    if commands is not None:
        for line in commands:
            print(f"(Pdb) {line}")
            yield line
        return
    while True:
        try:
            yield input("(Pdb) ")
        except EOFError:
            return
        except Exception as exc:  # a frontend that takes no input (ipykernel's StdinNotImplementedError)
            print(f"remotecell: no input here ({type(exc).__name__}): pass the pdb commands, "
                  "rc.debug(commands=['p x', 'up', 'q'])", file=sys.stderr)
            return


def _ask(frames: _post_mortem.RemoteFrames, line: str | None) -> DebugReply:
    sources = _post_mortem.sources(frames) if line is None else {}
    reply = _client.connection().ask(DebugMsg(target=frames.target, line=line, sources=sources), DebugReply,
                                     timeout_s=COMMAND_TIMEOUT_S)
    text = reply.text
    if reply.state == RELEASED:
        text = f"remotecell: {frames.error}: {text}"
    sys.stdout.write(text)
    sys.stdout.flush()
    return reply
