"""Images: ``image_build``, a client asking for an image to be built before it registers what uses it.

``image_list`` and ``image_prune`` are ``remotecell image list|prune``: the images
the runtime has built with their last use, and removing the layers of those not
used for a while (``images.usage``).

The runtime answers ``image_build`` when the image is ready (every layer cached, or built now),
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


@message("image_list")
class ImageListMsg(Message):
    pass


@message("reply")
class ImageListReply(Message):
    # one dict per image the runtime used: key, description, layers (count), last_used (epoch s), live (bool)
    images: list[dict[str, object]]


@message("image_prune")
class ImagePruneMsg(Message):
    older_than_s: float  # images not used for this long (and not live) lose their layers
    dry_run: bool = False  # say what would go, remove nothing


@message("reply")
class ImagePruneReply(Message):
    images: list[str]  # keys of the images removed
    layers: int  # layer folders removed
    mounts: int  # unpacked file folders removed
    freed_bytes: int  # bytes of files that had no other link
    kept_images: int
