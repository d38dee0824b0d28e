"""Every message of the protocol, one class each, grouped by what they are about.

- `session`: hello, heartbeats, status and shutdown; the ``error`` reply.
- `calls`: calls and their results, output and items, leases, cancelling.
- `containers`: what a container and the daemon say to each other.
- `apps`: apps, function registration and lookup, schedules.
- `volumes`: volumes and their files (chunks of raw bytes).
- `jobs`: spawned calls and their handles.
- `stores`: Dict and Queue.
- `blobs`: files uploaded once, named by their sha256 (an image's local files).
- `images`: an image built before what uses it is registered, its log streamed.

Naming: a request is ``<Name>Msg``; its answer, when it has fields, ``<Name>Reply``
(every reply travels as ``t: "reply"`` with the request's ``id``).  Fields every
client message may carry (``t``, ``id``, ``sid``) and the framing's own (``p``,
``pk``) are the envelope: the daemon reads them, message classes do not repeat them.
"""

from ..message import Decoder, Message, message, wire

__all__ = ["Decoder", "Message", "message", "wire"]
