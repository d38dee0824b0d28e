"""``remotecell image ...``: the images the runtime has built, and removing the layers of those not used lately.

    remotecell image list [--json]                          images by last use: key, live, layers, steps
    remotecell image prune [--older-than 7d] [--dry-run] [--json]   remove layers of images unused that long

An image in use (a registered or deployed function's, a running sandbox's, or one
being built) is never pruned; a pruned image is built again when next asked for.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from typing import Any

from remotecell_runtime.protocol.messages.images import ImageListMsg, ImageListReply, ImagePruneMsg, ImagePruneReply

from . import _client
from .exceptions import InvalidError

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def duration_s(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` in seconds; InvalidError naming the text otherwise."""
    found = _DURATION.match(text)
    if found is None:
        raise InvalidError(f"--older-than {text!r}: give a number and a unit, s, m, h, d or w (e.g. 7d, 12h)")
    return float(found.group(1)) * _UNITS_S[found.group(2)]


def add_parser(sub: Any) -> None:
    """The ``image`` command and its subcommands, on the ``remotecell`` parser's subparsers ``sub``."""
    image = sub.add_parser("image", help="built images: list, prune", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = image.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the images the runtime has built, by last use").add_argument(
        "--json", action="store_true")
    prune = actions.add_parser("prune", help="remove the layers of images not used for a while")
    prune.add_argument("--older-than", default="7d", help="images unused this long (default 7d; 0s: all unused)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    prune.add_argument("--json", action="store_true")


def cmd_image(args: argparse.Namespace) -> int:
    return _list(args) if args.action == "list" else _prune(args)


def _list(args: argparse.Namespace) -> int:
    images = _client.connection().ask(ImageListMsg(), ImageListReply).images
    if args.json:
        print(json.dumps(images, indent=2))
        return 0
    for row in images:
        when = datetime.datetime.fromtimestamp(float(str(row["last_used"]))).strftime("%Y-%m-%d %H:%M")
        print(f"{str(row['key'])[:12]}  {'live  ' if row['live'] else 'unused'}  last used {when}  "
              f"{row['layers']} layers  {row['description']}")
    if not images:
        print("no images built yet")
    return 0


def _prune(args: argparse.Namespace) -> int:
    msg = ImagePruneMsg(older_than_s=duration_s(args.older_than), dry_run=args.dry_run)
    reply = _client.connection().ask(msg, ImagePruneReply, timeout_s=600.0)
    if args.json:
        print(json.dumps({"images": reply.images, "layers": reply.layers, "mounts": reply.mounts,
                          "freed_bytes": reply.freed_bytes, "kept_images": reply.kept_images,
                          "dry_run": args.dry_run}, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(reply.images)} images not used for {args.older_than} ({reply.layers} layers, "
          f"{reply.mounts} file folders): {reply.freed_bytes / 2**20:.1f} MiB freed; {reply.kept_images} kept")
    return 0
