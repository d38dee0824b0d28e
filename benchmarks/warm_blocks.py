"""Does a warm call stay warm? Sequential ``f.remote(i)`` in blocks of 500, beside its floor, in one run.

The floor is one hop and back to a worker process that holds the function: a pyzmq DEALER
sends ``cloudpickle.dumps((args, kwargs))``, the worker unpickles, calls, and sends the
pickled result. The blocks alternate (500 floor calls, then 500 remotecell calls inside one
``with app.run()``), so both see the same machine at the same time; a block's ratio is its
remotecell p50 over the floor p50 of the block just before it.

    .venv/bin/python benchmarks/warm_blocks.py [--calls 20000] [--block 500]

Prints one line per block and a summary (worst ratio, blocks over 1.5x); exits 0 either way:
speed is reported here, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import zmq

TARGET_RATIO = 1.5  # issue 12: every block's p50 within 1.5x of the floor


def inc(x: int) -> int:
    return x + 1


def serve_floor(address: str) -> None:
    """The worker: receives the function once, then answers calls until killed."""
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(address)
    ident, body = sock.recv_multipart()
    fn = cloudpickle.loads(body)
    sock.send_multipart([ident, b"ok"])
    while True:
        ident, payload = sock.recv_multipart(copy=False)
        args, kwargs = cloudpickle.loads(payload.buffer)
        sock.send_multipart([ident, cloudpickle.dumps(fn(*args, **kwargs))])


def floor_caller(address: str) -> Callable[[int], int]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(address)
    sock.send(cloudpickle.dumps(inc))
    sock.recv()

    def call(i: int) -> int:
        sock.send(cloudpickle.dumps(((i,), {})))
        return cloudpickle.loads(sock.recv(copy=False).buffer)

    return call


def block_p50_us(call: Callable[[int], int], start: int, n: int) -> float:
    times = []
    for i in range(start, start + n):
        t0 = time.perf_counter_ns()
        if call(i) != i + 1:
            raise AssertionError(f"call({i}) did not return {i + 1}")
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="remotecell calls in all (default 20000)")
    parser.add_argument("--block", type=int, default=500, help="calls per block (default 500)")
    opts = parser.parse_args()
    import remotecell as rc

    app = rc.App("warm-blocks")
    remote_inc = app.function()(inc)
    with tempfile.TemporaryDirectory() as tmp:
        address = f"ipc://{Path(tmp)}/floor"
        worker = subprocess.Popen([sys.executable, __file__, "serve", address])
        try:
            floor = floor_caller(address)
            with app.run():
                remote_inc.remote(0)  # the container is up and leased before timing
                rows = run_blocks(floor, remote_inc.remote, opts.calls, opts.block)
        finally:
            worker.kill()
            worker.wait()
    report(rows)


def run_blocks(floor: Callable[[int], int], remote: Callable[[int], int], calls: int,
               block: int) -> list[tuple[float, float]]:
    rows = []
    for b in range(calls // block):
        floor_us = block_p50_us(floor, b * block, block)
        remote_us = block_p50_us(remote, b * block, block)
        rows.append((floor_us, remote_us))
        print(f"block {b + 1:3d}: floor {floor_us:6.0f} us  remotecell {remote_us:6.0f} us  "
              f"{remote_us / floor_us:4.2f}x", flush=True)
    return rows


def report(rows: list[tuple[float, float]]) -> None:
    ratios = [r / f for f, r in rows]
    over = sum(1 for x in ratios if x > TARGET_RATIO)
    floor_p50 = statistics.median(f for f, _ in rows)
    remote_p50 = statistics.median(r for _, r in rows)
    print(f"\n{len(rows)} blocks: floor p50 {floor_p50:.0f} us, remotecell p50 {remote_p50:.0f} us "
          f"(median block {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x); "
          f"{over} blocks over {TARGET_RATIO}x")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve_floor(sys.argv[2])
    else:
        main()
