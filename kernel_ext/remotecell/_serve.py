"""``remotecell serve FILE.py``: the dev loop of web endpoints (Modal's ``modal serve``).

The file's app runs as an ephemeral app (``app.run()`` prints each endpoint as ``name => URL``),
and runs again when a ``.py`` file of the file's folder changes: the new version starts first and
its endpoints take the labels over (the gateway routes a label to its newest registration), then
the old one stops, so a request between the two still finds one.  A version that fails to load
is reported and the running one goes on.  Ctrl-C stops the app.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from pathlib import Path

from . import _entry
from .app import App

POLL_S = 0.3


def _snapshot(folder: Path) -> dict[str, int]:
    """The ``.py`` files of ``folder`` with their mtimes (what a reload watches)."""
    out = {}
    for path in folder.glob("*.py"):
        try:
            out[str(path)] = path.stat().st_mtime_ns
        except OSError:
            continue
    return out


def _load(path: Path) -> App:
    """The file's app, loaded afresh (its module and its folder's modules imported again)."""
    folder = str(path.parent)
    for name, module in list(sys.modules.items()):  # the modules of that folder itself (not of folders below)
        file = getattr(module, "__file__", None) or ""
        if file and os.path.dirname(os.path.abspath(file)) == folder and name != "__main__":
            del sys.modules[name]
    sys.modules.pop("remotecell_user_app", None)
    return _entry.find_app(_entry.load_file(str(path)), str(path))


def serve_file(target: str) -> int:
    path = Path(target).resolve()
    folder = path.parent
    app = _load(path)  # a file that does not load the first time is an error of the command
    seen = _snapshot(folder)
    with contextlib.ExitStack() as running:
        running.enter_context(app.run())
        print(f"serving {target}: edit it and the app runs again; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(POLL_S)
                now = _snapshot(folder)
                if now == seen:
                    continue
                seen = now
                print(f"{target} changed: running it again", flush=True)
                try:
                    new = _load(path)
                    new_run = contextlib.ExitStack()
                    new_run.enter_context(new.run())
                except Exception:
                    traceback.print_exc()
                    print("the running version goes on; fix the file to run it again", flush=True)
                    continue
                old, running_stack = running.pop_all(), new_run
                old.close()  # after the new version serves its labels
                running.enter_context(running_stack)
        except KeyboardInterrupt:
            print("stopping", flush=True)
    return 0
