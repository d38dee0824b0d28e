"""What by-value code depends on: both sides say these in ``hello`` and refuse a mismatch."""

from __future__ import annotations

import sys

import cloudpickle

VERSION = "0.1.0"  # remotecell's, the same as pyproject's


def versions() -> dict[str, str]:
    """This process's Python, cloudpickle and remotecell versions."""
    v = sys.version_info
    return {"python": f"{v.major}.{v.minor}.{v.micro}", "cloudpickle": cloudpickle.__version__, "remotecell": VERSION}
