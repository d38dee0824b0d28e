"""map / starmap / for_each against a real runtime."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import remotecell as rc
from conftest import Runtime, run_script, wait_for


def test_map_keeps_order_and_starmap_unpacks(app):
    @app.function(max_containers=3)
    def slow_square(x, delay=0.0):
        time.sleep(delay)
        return x * x

    assert list(slow_square.map(range(20))) == [x * x for x in range(20)]
    # later inputs finish first, yet results come in input order
    assert list(slow_square.map([3, 2, 1], [0.3, 0.15, 0.0])) == [9, 4, 1]
    assert list(slow_square.starmap([(1, 0.0), (2, 0.0)])) == [1, 4]
    assert list(slow_square.map(range(3), kwargs={"delay": 0.0})) == [0, 1, 4]


def test_unordered_map_yields_as_inputs_finish(app):
    @app.function(max_containers=3)
    def wait(seconds):
        time.sleep(seconds)
        return seconds

    assert list(wait.map([0.6, 0.3, 0.0], order_outputs=False)) == [0.0, 0.3, 0.6]


def test_return_exceptions_and_first_failure(app):
    @app.function(max_containers=2)
    def check(x):
        if x % 3 == 0:
            raise ValueError(f"bad {x}")
        return x

    results = list(check.map(range(1, 7), return_exceptions=True))
    assert results[:2] == [1, 2] and isinstance(results[2], ValueError) and str(results[5]) == "bad 6"
    with pytest.raises(ValueError, match="bad 3"):
        list(check.map(range(1, 7)))
    check.for_each(range(1, 7), ignore_exceptions=True)
    with pytest.raises(ValueError):
        check.for_each(range(1, 7))


def test_failing_input_iterator_surfaces_and_cancels(app):
    @app.function(max_containers=2)
    def nap(x):
        time.sleep(5)
        return x

    def inputs():
        yield 1
        yield 2
        raise RuntimeError("input iterator broke")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="input iterator broke"):
        list(nap.map(inputs()))
    assert time.monotonic() - start < 4  # surfaced at once, not after the sleeping inputs

    def nothing_left() -> bool:
        stats = nap.stats()
        return stats["queued"] == 0 and stats["running"] == 0

    wait_for(nothing_left, timeout_s=10, what="the inputs already sent to be cancelled")


def test_map_aio_in_a_running_loop(app):
    @app.function()
    def inc(x):
        return x + 1

    async def main():
        return [x async for x in inc.map.aio(range(10))], await inc.for_each.aio(range(3))

    values, nothing = asyncio.run(main())
    assert values == list(range(1, 11)) and nothing is None


@pytest.mark.timeout(400)  # ~50 s on a quiet 2-core machine; much more when it is shared
def test_a_million_item_map_runs_in_bounded_memory(tmp_path, new_home):
    state = new_home("big-map")
    rt = Runtime(state)
    try:
        daemon_before = _peak_rss_kib(rt.proc.pid)
        out = run_script("""
import resource, remotecell as rc
app = rc.App("big")

@app.function(min_containers=2, max_containers=2)
def inc(x):
    return x + 1

with app.run():
    assert list(inc.map(range(3000))) == list(range(1, 3001))  # warm: the steady state is what we measure
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = sum(inc.map(x for x in range(1_000_000)))  # a generator: nothing holds the inputs
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(total, before, after)
""", env={"REMOTECELL_HOME": str(state)}, timeout_s=600, tmp_path=tmp_path)
        daemon_after = _peak_rss_kib(rt.proc.pid)
    finally:
        rt.stop()
    assert out.returncode == 0, out.stderr
    total, client_before, client_after = map(int, out.stdout.split())
    assert total == sum(range(1, 1_000_001))
    # 1,000,000 inputs and results would take hundreds of MiB if anything kept them
    assert client_after - client_before < 40 * 1024, (client_before, client_after)
    assert daemon_after - daemon_before < 40 * 1024, (daemon_before, daemon_after)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_ctrl_c_during_a_map_leaves_nothing_running(runtime, tmp_path):
    script = tmp_path / "interrupted_map.py"
    script.write_text("""
import sys, time, remotecell as rc
app = rc.App("interrupted-map")

@app.function(max_containers=2)
def nap(x):
    time.sleep(60)
    return x

try:
    for value in nap.map(range(20)):
        pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.readline()  # keep the app (and its pool) alive while the test looks at it
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _pool(rc.status(), "nap", "running") == 2, timeout_s=30, what="two inputs to run")
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "interrupted"
        wait_for(lambda: _pool(rc.status(), "nap", "running") == 0 and _pool(rc.status(), "nap", "queued") == 0,
                 timeout_s=15, what="the runtime to have nothing of the map left")
        proc.stdin.write("\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted; cancelled the 20 remote inputs of nap.map still running" in err


def _pool(status, function: str, field: str) -> int:
    pools = [p for p in status["pools"] if p["function"] == function]
    return sum(p[field] for p in pools) if pools else 0


PROGRESS_SCRIPT = """
import time, remotecell as rc
app = rc.App("progress")

@app.function(max_containers=2)
def tick(x):
    time.sleep(0.1)
    if x == 3:
        raise ValueError("three")
    return x

print(len(list(tick.map(range(30), return_exceptions=True))))
tick.for_each(range(16), ignore_exceptions=True)
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _read_all(fd: int) -> bytes:
    """What the other end of a pty wrote until it closed."""
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end closed, the process is done
            return out
        if not chunk:
            return out
        out += chunk


def test_map_progress_is_a_rich_bar_on_a_terminal(runtime, tmp_path):
    script = tmp_path / "progress.py"
    script.write_text(PROGRESS_SCRIPT)
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=follower, text=True,
                            env=dict(os.environ, COLUMNS="160", TERM="xterm-256color"))
    os.close(follower)
    terminal = _read_all(leader).decode()
    os.close(leader)
    assert proc.wait(60) == 0 and proc.stdout.read().strip() == "30"
    text = ANSI.sub("", terminal)
    assert "\x1b[" in terminal  # drawn with cursor moves, in place
    mapped = text[text.rindex("tick.map"):text.index("tick.for_each")]  # the bar's last drawing: final
    assert "━" in mapped and "29/30 done, 1 failed, 0 in flight" in mapped, terminal
    assert "/s" in mapped
    each = text[text.rindex("tick.for_each"):]
    assert "15/16 done, 1 failed, 0 in flight" in each, terminal


def test_map_progress_is_plain_throttled_lines_when_piped(runtime, tmp_path):
    piped = run_script(PROGRESS_SCRIPT, tmp_path=tmp_path)
    assert piped.returncode == 0 and piped.stdout.strip() == "30", piped.stderr
    lines = [line for line in piped.stderr.splitlines() if line.startswith("tick.")]
    assert "\x1b" not in piped.stderr and "━" not in piped.stderr  # no bar, no cursor moves: a log reads it
    maps = [line for line in lines if line.startswith("tick.map: ")]
    assert maps and maps[-1].startswith("tick.map: 29/30 done, 1 failed, 0 in flight, "), piped.stderr
    assert re.search(r", \d+/s, \d+\.\d s$", maps[-1]), maps[-1]  # its rate, and how long it took
    assert len(maps) <= 3, maps  # the first, the last, at most one more every 5 s: not one per input
    assert lines[-1].startswith("tick.for_each: 15/16 done, 1 failed, 0 in flight"), piped.stderr


def test_retry_failed_reruns_only_the_failures_and_merges_them_in_order(app, tmp_path):
    @app.function(max_containers=2)
    def flaky(x, folder):
        import pathlib

        tries = pathlib.Path(folder, str(x))
        tries.write_text(tries.read_text() + "." if tries.exists() else ".")
        if x == 5 or (x == 2 and len(tries.read_text()) == 1):  # 5 always fails, 2 only the first time
            raise ValueError(f"bad {x}")
        return x * 10

    def attempts() -> dict[int, int]:
        return {int(p.name): len(p.read_text()) for p in tmp_path.iterdir()}

    results = list(flaky.map(range(8), kwargs={"folder": str(tmp_path)}, return_exceptions=True))
    assert [i for i, r in enumerate(results) if isinstance(r, ValueError)] == [2, 5]
    merged = flaky.retry_failed(results)
    assert merged[:5] == [0, 10, 20, 30, 40] and merged[6:] == [60, 70]
    assert isinstance(merged[5], ValueError) and merged[5] is not results[5]  # failed again: its new exception
    assert attempts() == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1}  # only the two failures ran again
    again = flaky.retry_failed(merged)
    assert again[:5] == merged[:5] and isinstance(again[5], ValueError) and attempts()[5] == 3 and attempts()[2] == 2
    assert flaky.retry_failed([1, 2, 3]) == [1, 2, 3]  # plain values: nothing to run
    assert flaky.retry_failed(iter(results))[2] == 20  # earlier retries are merged, not run again
    assert attempts()[2] == 2 and attempts()[5] == 4  # 5 is still a failure there: it runs once more


def test_retry_failed_of_starmap_and_of_another_function(app):
    @app.function()
    def divide(a, b):
        return a / b

    @app.function()
    def other(x):
        return x

    results = list(divide.starmap([(1, 1), (2, 0), (3, 3)], return_exceptions=True))
    assert isinstance(results[1], ZeroDivisionError)
    with pytest.raises(rc.exception.InvalidError, match=r"failed in \S*divide, not \S*other"):
        other.retry_failed(results)
    with pytest.raises(rc.exception.InvalidError, match="not int"):
        divide.retry_failed(3)
    merged = asyncio.run(divide.retry_failed.aio(results))
    assert merged[0] == 1 and merged[2] == 1 and isinstance(merged[1], ZeroDivisionError)
