"""What by-value code depends on: both sides say these in ``hello`` and refuse a mismatch."""

from __future__ import annotations

import sys

VERSION = "0.1.0"  # remotecell's, the same as pyproject's


def versions() -> dict[str, str]:
    """This process's Python, cloudpickle and remotecell versions."""
    import cloudpickle  # here: `import remotecell` (which reads VERSION) does not pay for it

    v = sys.version_info
    return {"python": f"{v.major}.{v.minor}.{v.micro}", "cloudpickle": cloudpickle.__version__, "remotecell": VERSION}
