"""A runtime of the GPU checks' own: importing this sets a fresh REMOTECELL_HOME (before the first call).

    from private_runtime import HOME, stop_runtime   # a fresh REMOTECELL_HOME; torch checked
    ...                                              # the first call starts a runtime there
    stop_runtime()                                   # stop and reap it, remove its home
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time

HOME = tempfile.mkdtemp(prefix="rc-gpu-check-")
os.environ["REMOTECELL_HOME"] = HOME  # the first call starts a runtime here
for var in ("REMOTECELL_RUNTIME", "REMOTECELL_FAKE_GPUS"):  # this host's real GPUs, nothing else
    os.environ.pop(var, None)

try:
    import torch  # noqa: F401  (checked here: every GPU check needs it)
except ImportError:
    sys.exit(f"{os.path.basename(sys.argv[0])} needs torch in this venv: pip install -e '.[torch]'")

from remotecell import _client, _local


def stop_runtime() -> None:
    """Stop the runtime this script started, reap it (it is this process's child), remove its home."""
    info = _local.local_info()
    if info is not None and info.pid is not None:
        _client.connection().request({"t": "shutdown"})
        _client.reset_connection()
        deadline = time.monotonic() + 15
        while os.waitpid(info.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                print(f"the runtime (pid {info.pid}) did not stop within 15 s; killing it")
                os.kill(info.pid, signal.SIGKILL)
                os.waitpid(info.pid, 0)
                break
            time.sleep(0.05)
    shutil.rmtree(HOME, ignore_errors=True)
