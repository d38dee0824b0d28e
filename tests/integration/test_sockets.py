"""Socket lifecycle: blocking calls from many threads use a bounded number of sockets, closed when threads end.

Each thread that makes blocking calls gets a channel (a socket of its own, and
those of its leases) up to a cap; threads beyond it share one multiplexed
socket. A channel is closed when its thread ends, so the client's and the
daemon's open files come back to where they were.
"""

from __future__ import annotations

import os
import threading

import pytest
from conftest import wait_for

THREADS = 1000
SLACK_FDS = 6  # "within a few": a lazily made socket or pipe of the runtime's own may come and go


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(300)
def test_a_thousand_threads_call_remote_and_their_sockets_are_closed(app, runtime):
    @app.function(max_containers=1)
    def inc(x):
        return x + 1

    assert inc.remote(0) == 1  # registered, its container warm (and leased to this thread)
    client_before, daemon_before = open_fds(), open_fds(runtime.proc.pid)

    results: list[object] = [None] * THREADS
    start = threading.Barrier(THREADS)

    def call(i: int) -> None:
        start.wait()  # all at once: 1,000 callers waiting together
        try:
            results[i] = inc.remote(i)
        except BaseException as exc:  # the assertion below names it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads)

    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of {THREADS} calls failed, the first with {failed[0]!r}"
    assert results == [i + 1 for i in range(THREADS)]

    wait_for(lambda: open_fds() <= client_before + SLACK_FDS, timeout_s=30,
             what=f"the client's open files to come back to {client_before} (now {open_fds()})")
    wait_for(lambda: open_fds(runtime.proc.pid) <= daemon_before + SLACK_FDS, timeout_s=30,
             what=f"the daemon's open files to come back to {daemon_before} (now {open_fds(runtime.proc.pid)})")
    assert inc.remote(41) == 42  # and this thread's channel still works
