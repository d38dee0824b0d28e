"""Images: ``image_build``, a client asking for an image to be built before it registers what uses it.

The runtime answers when the image is ready (every layer cached, or built now),
or with an ``ImageBuildError`` naming the failed step and quoting its last output
lines.  Meanwhile the build's log comes as ``output`` messages carrying this
request's ``id``, one line each, so a client prints them as its cell's or its
script's output.  The blobs the image names are sent first (``blob_put``).
"""

from __future__ import annotations

from ..image_spec import ImageSpec
from ..message import Message, message


@message("image_build")
class ImageBuildMsg(Message):
    image: ImageSpec


@message("reply")
class ImageBuildReply(Message):
    key: str  # the image's key on the runtime
    built: bool  # something was built for this request (False: it was all cached)
    seconds: float = 0.0  # how long this request waited for it
