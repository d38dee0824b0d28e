"""``rc.Sandbox``: what a sandbox costs to start, to exec in, to talk to, and how fast its output streams, next to
the same thing done with ``subprocess`` on the host (no sandbox, no runtime), in one run, rounds interleaved.

    .venv/bin/python benchmarks/sandboxes.py             # 5 rounds (~30 s)
    .venv/bin/python benchmarks/sandboxes.py --rounds 9

A runtime is started on a fresh state folder (bubblewrap sandboxes where this host makes them). Per round, in
wall milliseconds (throughput in MB/s):

* ``create + echo``: ``Sandbox.create("echo", "hi")`` until ``stdout.read()`` returned (a container started:
  bwrap, the agent's Python, its hello, the command, its output); ``subprocess``: ``subprocess.run(["echo"])``;
* ``exec true``: ``sb.exec("true").wait()`` in a running sandbox; ``subprocess``: ``subprocess.run(["true"])``;
* ``stdin line round trip``: one line written and drained into ``cat`` and read back (mean of 50);
  ``subprocess``: the same through a ``Popen`` pipe;
* ``stdout MB/s``: 200 MB written by ``head -c`` and read as it comes (``text=False``); ``subprocess``: the same
  from a pipe.

Prints a markdown table of medians (min-max); writes ``benchmarks/results/sandboxes-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
STREAM_BYTES = 200 << 20
LINES = 50


def start_runtime() -> subprocess.Popen[bytes]:
    home = Path(tempfile.mkdtemp(prefix="rc-bench-sandboxes-"))
    os.environ["REMOTECELL_HOME"] = str(home)
    os.environ.pop("REMOTECELL_RUNTIME", None)
    proc = subprocess.Popen([sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(home)],
                            stdout=open(home.parent / f"{home.name}.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (home / "connection.json").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the runtime did not start (log: {home.parent / f'{home.name}.log'})")
        time.sleep(0.02)
    return proc


def ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def line_round_trips_ms(write: Callable[[bytes], None], read_line: Callable[[], bytes]) -> float:
    started = time.perf_counter()
    for i in range(LINES):
        write(f"line {i}\n".encode())
        assert read_line() == f"line {i}\n".encode()
    return (time.perf_counter() - started) * 1000 / LINES


def stream_mb_s(read_all: Callable[[], bytes]) -> float:
    started = time.perf_counter()
    data = read_all()
    assert len(data) == STREAM_BYTES
    return STREAM_BYTES / 1e6 / (time.perf_counter() - started)


def one_round(rc: object, app: object) -> dict[str, float]:
    Sandbox = rc.Sandbox  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    out["create + echo (ms)"] = ms(lambda: Sandbox.create("echo", "hi", app=app).stdout.read())
    out["create + echo, subprocess (ms)"] = ms(lambda: subprocess.run(["echo", "hi"], capture_output=True))
    sb = Sandbox.create("sleep", "infinity", app=app)
    sb.exec("true").wait()  # up and running
    out["exec true (ms)"] = ms(lambda: sb.exec("true").wait())
    out["exec true, subprocess (ms)"] = ms(lambda: subprocess.run(["true"]))
    cat = sb.exec("cat", text=False)
    lines = iter(cat.stdout)

    def write(data: bytes) -> None:
        cat.stdin.write(data)
        cat.stdin.drain()

    out["stdin line round trip (ms)"] = line_round_trips_ms(write, lambda: next(lines))
    local = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert local.stdin is not None and local.stdout is not None

    def write_local(data: bytes) -> None:
        local.stdin.write(data)  # type: ignore[union-attr]
        local.stdin.flush()  # type: ignore[union-attr]

    out["stdin line round trip, subprocess (ms)"] = line_round_trips_ms(write_local, local.stdout.readline)
    local.kill()
    local.wait()
    head = ["head", "-c", str(STREAM_BYTES), "/dev/zero"]
    out["stdout (MB/s)"] = stream_mb_s(lambda: sb.exec(*head, text=False).stdout.read())
    out["stdout, subprocess (MB/s)"] = stream_mb_s(lambda: subprocess.run(head, capture_output=True).stdout)
    sb.terminate()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runtime = start_runtime()
    try:
        import remotecell as rc

        print(f"sandbox: {rc.status()['sandbox']}")
        app = rc.App("bench-sandboxes")
        with app.run():
            one_round(rc, app)  # warm-up: page cache, bytecode
            rounds = [one_round(rc, app) for _ in range(args.rounds)]
    finally:
        runtime.terminate()
        runtime.wait()
    print("| measure | median | min-max |\n|---|---|---|")
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        print(f"| {key} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"sandboxes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"rounds": rounds}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
