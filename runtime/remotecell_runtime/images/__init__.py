"""Images: specs -> layers -> cached environments (see ``builder``).

What the runtime needs from its start is here; ``builder.Images`` (and with it
uv, layers and system builds) is imported once an image is first used.
"""

from .build import Build
from .steps import BuildFailed, ImageError, check

__all__ = ["Build", "BuildFailed", "ImageError", "check"]
