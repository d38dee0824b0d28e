"""Blobs: opaque files a client uploads once, named by the sha256 of their bytes (an image's local files).

A client asks ``blob_has`` which of the digests an image names the runtime lacks,
then sends each missing one as ``blob_put`` with one raw payload (the bytes
themselves, not a pickle).  The runtime checks that the bytes hash to the name,
keeps them under its state directory and never reads inside them.
"""

from __future__ import annotations

import re

from ..message import Message, message, wire

BLOB_MAX_BYTES = 512 << 20  # a larger set of files belongs in a Volume
DIGEST = re.compile(r"^[0-9a-f]{64}$")  # a blob's name: the lowercase hex sha256 of its bytes


@message("blob_has")
class BlobHasMsg(Message):
    """Which of these blobs the runtime lacks."""

    digests: list[str] = wire(factory=list)


@message("reply")
class BlobHasReply(Message):
    missing: list[str]  # in the order asked


@message("blob_put")
class BlobPutMsg(Message):
    """One blob: its one payload is the raw bytes, whose sha256 must be ``digest``."""

    digest: str
    size: int  # its length, so an oversized blob is refused by its header
