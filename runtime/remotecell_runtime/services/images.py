"""``image_build``: a client's image built (or found cached) before it registers a function that uses it.

The build's log goes to the asking client as it comes, one ``output`` message of
the request per line; the reply follows when the image is ready, or an
``ImageBuildError`` naming the failed step with its last lines.  A client that
asks again after a failed build gets a new build (``Images.start(again=True)``);
one that asks while a build runs joins it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..images import Build, ImageError, check
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.image_spec import ImageSpec
from ..protocol.message import Message
from ..protocol.messages.calls import OutputMsg
from ..protocol.messages.images import (
    ImageBuildMsg,
    ImageBuildReply,
    ImageListMsg,
    ImageListReply,
    ImagePruneMsg,
    ImagePruneReply,
)
from .base import Handler, Host, Request, Service, error_reply, refusal, with_id

if TYPE_CHECKING:
    from ..images.builder import Images
    from .functions import Functions


class ImageBuilds(Service):
    """``live``: the images registered functions and running sandboxes use (never pruned)."""

    def __init__(self, host: Host, functions: Functions, live: Callable[[], Iterable[ImageSpec]]) -> None:
        self.host = host
        self.functions = functions
        self.live = live

    @property
    def images(self) -> Images:
        return self.functions.images  # made at its first use (``Functions.images``)

    def handlers(self) -> dict[type[Message], Handler]:
        return {ImageBuildMsg: self.on_build, ImageListMsg: self.on_list, ImagePruneMsg: self.on_prune}

    def on_list(self, req: Request[ImageListMsg]) -> ImageListReply:
        live = {self.images.key(spec) for spec in self.live()}
        rows: list[dict[str, object]] = []
        for key, (record, used) in sorted(self.images.usage.records().items(), key=lambda item: -item[1][1]):
            layers = record.get("layers")
            rows.append({"key": key, "description": record.get("description", ""), "last_used": used,
                         "layers": len(layers) if isinstance(layers, list) else 0, "live": key in live})
        return ImageListReply(images=rows)

    def on_prune(self, req: Request[ImagePruneMsg]) -> ImagePruneReply:
        if not req.msg.older_than_s >= 0:
            raise refusal(ErrorName.INVALID, f"image prune: older_than_s={req.msg.older_than_s!r} must be >= 0")
        report = self.images.prune(req.msg.older_than_s, list(self.live()), req.msg.dry_run)
        return ImagePruneReply(images=report.images, layers=len(report.layers), mounts=len(report.mounts),
                               freed_bytes=report.freed_bytes, kept_images=report.kept_images)

    def on_build(self, req: Request[ImageBuildMsg]) -> ImageBuildReply | None:
        spec = req.msg.image
        try:
            check(spec, sandboxed=self.images.sandboxed)
        except ImageError as exc:
            raise refusal(ErrorName.INVALID, str(exc)) from None
        found = self.images.start(spec, again=True)
        if not isinstance(found, Build):
            return ImageBuildReply(key=self.images.key(spec), built=False)
        asked = time.monotonic()
        if asked - found.started > 0.1:
            self._say(req, f"(joining the build of image {found.key[:12]} that started "
                           f"{asked - found.started:.0f} s ago: {found.doing})")
        listener = functools.partial(self._say, req)
        found.listeners.append(listener)
        assert found.task is not None
        found.task.add_done_callback(lambda task: self._answer(req, found, listener, task, asked))
        return None

    def _say(self, req: Request[ImageBuildMsg], line: str) -> None:
        self.host.send_peer(req.peer, framing.encode(OutputMsg(id=str(req.id), text=line + "\n").to_wire()))

    def _answer(self, req: Request[ImageBuildMsg], build: Build, listener: Callable[[str], None],
                task: asyncio.Task[object], asked: float) -> None:
        build.listeners.remove(listener)
        if task.cancelled():
            self.host.send_peer(req.peer, error_reply(req.id, ErrorName.IMAGE_BUILD,
                                                      "the runtime stopped while it built the image"))
        elif build.error is not None:
            self.host.send_peer(req.peer, error_reply(req.id, ErrorName.IMAGE_BUILD, build.error))
        else:
            reply = ImageBuildReply(key=build.key, built=True, seconds=round(time.monotonic() - asked, 3))
            self.host.send_peer(req.peer, framing.encode(with_id(reply, req.id)))
