"""Images: specs -> layers -> cached environments (see ``builder``)."""

from .builder import Build, BuildFailed, Images
from .steps import ImageError, check

__all__ = ["Build", "BuildFailed", "ImageError", "Images", "check"]
