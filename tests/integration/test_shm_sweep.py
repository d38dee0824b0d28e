"""Shared memory that killed processes leave behind: their runtime sweeps it within seconds.

A process unlinks its idle segments at exit; ``kill -9`` gives it no chance.  The runtime
removes the segments of its containers that are gone and of clients that died, once
they have been untouched for a couple of seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import host_pid, wait_for
from remotecell import _client
from remotecell_runtime.daemon import SHM_SWEEP_EVERY_S

BIG = 4 << 20  # bytes: well past the 1 MiB at which buffers go through shared memory


def segments(prefix: str) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]


def test_a_killed_containers_segments_are_swept(app):
    @app.function()
    def total(a):
        return int(a.sum())

    assert _client.connection().shm, "this host's clients use shared memory"
    assert total.remote(np.ones(BIG // 8)) == BIG // 8  # the container keeps the segment for its next send
    stats = total.stats()
    (cid,) = stats["placements"]
    runtime_id = _client.connection().runtime_id
    kept = segments(f"rc-{runtime_id}-{cid}-")
    assert kept, "the container holds the argument's segment, renamed as its own"
    os.kill(host_pid(stats, cid), signal.SIGKILL)
    wait_for(lambda: not segments(f"rc-{runtime_id}-{cid}-"), timeout_s=15,
             what=f"the runtime to sweep the killed container's segments {kept}")


def test_a_killed_clients_segments_are_swept_and_a_live_ones_kept(app, tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(f"""
import sys
import numpy as np
import remotecell as rc
from remotecell_runtime.protocol.sharedmem import ShmPool

app = rc.App("shm-holder")

@app.function()
def ones(n):
    import numpy as np
    return np.ones(n)

with app.run():
    assert ones.remote({BIG // 8}).sum() == {BIG // 8}  # the result's segment, kept here once the array is gone
    print(ShmPool.local().prefix, flush=True)
    sys.stdin.readline()
""")
    holder = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ))
    try:
        prefix = holder.stdout.readline().strip()
        mine = f"{prefix}-{holder.pid}-"
        assert prefix and segments(mine), "the client keeps the result's segment, renamed as its own"
        time.sleep(2.5 * SHM_SWEEP_EVERY_S)  # a window of sweeps to do nothing in: the holder lives
        assert segments(mine), "a live client's segments stay"
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        wait_for(lambda: not segments(mine), timeout_s=15, what="the runtime to sweep the killed client's segments")
    finally:
        if holder.poll() is None:
            holder.kill()
