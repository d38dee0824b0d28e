"""One system, in its own process and venv: `python agent.py SYSTEM` (driven by run.py).

Session mode: start the system, then answer one JSON command per stdin line
({"op": "measure", "workload": W, "runs": N} or {"op": "stop"}) with one result
line (common.RESULT_PREFIX + JSON) on stdout. ``--cold``: start the system,
report when the first result came back, stop.

The remote code lives here, in ``__main__``, so that every system ships it by
value, as it would a user's script or notebook cell.
"""

from __future__ import annotations

import time

T_MAIN = time.time()  # the interpreter is up (the harness notes the launch time)

import argparse
import importlib
import json
import os
import sys
import traceback
import types
from typing import Any

from common import emit


def inc(x: int) -> int:
    return x + 1


def identity(x: Any) -> Any:
    return x


class Adder:
    def f(self, x: int) -> int:
        return x + 1


class Pinger:
    """A worker with nothing to set up (``setup`` is remotecell's ``@enter``); says which process it is."""

    def setup(self) -> None:
        pass

    def ping(self) -> int:
        return os.getpid()


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def summed(xs: list[list[int]]) -> list[int]:
    """The batched workload: each request is a list of ints; the batch returns each one's sum."""
    return [sum(x) for x in xs]


def total(x: list[int]) -> int:
    """The same work unbatched: one request, one sum."""
    return sum(x)


CODE = types.SimpleNamespace(inc=inc, identity=identity, Adder=Adder, Pinger=Pinger, nap=nap, summed=summed,
                             total=total)


def cold(system: str) -> None:
    module = importlib.import_module(f"systems.{system}_sys")
    t_imported = time.time()
    session = module.Session(CODE)
    session.start()
    t_result = time.time()
    pids = session.pids()
    session.stop()
    emit({"t_main": T_MAIN, "t_imported": t_imported, "t_result": t_result, "pids": pids})


def serve(system: str) -> None:
    from common import versions
    from workloads import WORKLOADS

    module = importlib.import_module(f"systems.{system}_sys")
    session = module.Session(CODE)
    session.start()
    emit({"ok": True, "versions": versions(module.PACKAGES), "pids": session.pids()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "stop":
            break
        workload = WORKLOADS[cmd["workload"]]
        if workload.measure is None or (workload.needs and not hasattr(session, workload.needs)):
            emit({"ok": True, "result": None})
            continue
        try:
            emit(
                {
                    "ok": True,
                    "result": workload.measure(session, cmd["runs"]),
                    "pids": session.pids(),
                }
            )
        except Exception:
            emit({"ok": False, "error": traceback.format_exc()})
    pids = session.pids()
    session.stop()
    emit({"ok": True, "pids": pids})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("system")
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args()
    (cold if args.cold else serve)(args.system)


if __name__ == "__main__":
    main()
