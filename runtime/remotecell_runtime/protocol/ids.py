"""The ids of spawned calls (``fc-…``) and of ``spawn_map`` groups (``fg-…``), made by clients and by the scheduler.

An id is the microseconds since the epoch (13 hex digits), then 40 random bits: unique
without coordination, and in the order they were made.  That order is what the job store's
id index wants: each new row goes at its end, in the page the last one went to, so a commit
dirties (and a checkpoint writes back) one index page, however large the store has grown; a
random id lands on a different page each time.
"""

from __future__ import annotations

import secrets
import time


def new_call_id(kind: str = "fc") -> str:
    """A fresh id: ``fc`` for a spawned call, ``fg`` for a group of them."""
    return f"{kind}-{time.time_ns() // 1000:013x}{secrets.token_hex(5)}"
