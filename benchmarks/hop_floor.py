"""The floor of a brokered design: a raw pyzmq round trip direct (2 hops) and through a broker (4 hops).

A call through remotecell's router crosses the daemon (client -> daemon -> container ->
daemon -> client); a warm blocking call under a lease goes straight to its container
(client -> container -> client). This measures what those hops cost with no Python work
besides a recv, a send and pickling an int, on this machine, so the gap between the
floors and remotecell's own numbers is visible:

    .venv/bin/python benchmarks/hop_floor.py            # p50 of 2,500 calls, 3 rounds each
"""

from __future__ import annotations

import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

CALLS = 3000
WARMUP = 500


def answer_forever(sock: zmq.Socket) -> None:
    """The worker's whole job: f(x) = x + 1 on the last frame, the routing frames sent back as they came."""
    while True:
        frames = sock.recv_multipart()
        frames[-1] = pickle.dumps(pickle.loads(frames[-1]) + 1)
        sock.send_multipart(frames)


def serve_direct(folder: Path) -> None:
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(f"ipc://{folder}/direct")
    answer_forever(sock)


def serve_broker(folder: Path) -> None:
    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    front.bind(f"ipc://{folder}/front")
    back.bind(f"ipc://{folder}/back")
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    worker = b""
    while True:
        ready = dict(poller.poll())
        if back in ready:
            frames = back.recv_multipart()
            if frames[1] == b"ready":
                worker = frames[0]
            else:
                front.send_multipart(frames[1:])
        if front in ready:
            back.send_multipart([worker, *front.recv_multipart()])


def serve_worker(folder: Path) -> None:
    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(f"ipc://{folder}/back")
    sock.send(b"ready")
    answer_forever(sock)


def p50_us(address: str) -> float:
    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(address)
    sock.send(pickle.dumps(0))  # connected and served once before timing
    sock.recv()
    times = []
    for i in range(CALLS):
        start = time.perf_counter()
        sock.send(pickle.dumps(i))
        sock.recv()
        times.append(time.perf_counter() - start)
    sock.close(linger=0)
    return statistics.median(times[WARMUP:]) * 1e6


def main() -> None:
    roles = {"direct": serve_direct, "broker": serve_broker, "worker": serve_worker}
    if len(sys.argv) == 3:
        roles[sys.argv[1]](Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, __file__, role, tmp]) for role in roles]
        try:
            for round_no in range(3):
                direct = p50_us(f"ipc://{tmp}/direct")
                brokered = p50_us(f"ipc://{tmp}/front")
                print(f"round {round_no + 1}: 2 hops (direct) {direct:.0f} us p50, "
                      f"4 hops (broker) {brokered:.0f} us p50")
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
