"""The Ray backend next to the local one and to plain Ray tasks, side by side in one run.

    .venv/bin/python benchmarks/ray_backend.py [--calls 1000] [--inputs 1000]

On one Ray cluster on this host (a head with 2 CPUs, every address 127.0.0.1), it measures:

* warm ``f.remote(x)`` p50 / p90 in µs, on a runtime with the local backend and on one with
  ``--backend ray`` (goal: Ray within 2x of local): a blocking caller leases its container, and an actor
  on the daemon's host takes the calls on its direct socket as a local container does;
* the same through the daemon (``await f.remote.aio(x)``: no lease), as every call to a container on
  another host than its caller goes (tcp with CURVE to the actor, ipc to a local container);
* a map of ``--inputs`` inputs of ``f(x) = x + 1`` through ``f.map`` on the Ray backend, and the same
  work as plain Ray tasks (``ray.get([f.remote(x) ...])`` from a driver), in seconds (goal: ahead of Ray);
* the daemon's resident memory (VmRSS) with the local backend and with Ray attached.

Prints a markdown table; one warm-up round of each before its timer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import footprint, latency_stats_us

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def plus_one(x: int) -> int:
    return x + 1


def start_runtime(home: Path, args: list[str]) -> tuple[subprocess.Popen, dict[str, Any]]:
    log = open(home.parent / f"{home.name}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "remotecell_runtime", "serve", "--state-dir", str(home), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **LOOPBACK))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        path = home / "connection.json"
        if path.exists():
            info = json.loads(path.read_text())
            if info.get("pid") == proc.pid:
                return proc, info
        if proc.poll() is not None:
            raise SystemExit(f"the runtime exited: see {log.name}")
        time.sleep(0.05)
    raise SystemExit("the runtime did not start within 120 s")


def measure_runtime(home: Path, args: list[str], calls: int, inputs: int) -> dict[str, Any]:
    import remotecell as rc
    import remotecell._client as client_mod

    proc, info = start_runtime(home, args)
    os.environ["REMOTECELL_HOME"] = str(home)
    os.environ.pop("REMOTECELL_RUNTIME", None)
    client_mod.reset_connection()
    app = rc.App("bench-ray-backend")
    f = app.function(max_containers=2)(plus_one)
    try:
        with app.run():
            for i in range(200):
                f.remote(i)
            samples = []
            for i in range(calls):
                started = time.perf_counter()
                f.remote(i)
                samples.append(time.perf_counter() - started)
            routed = asyncio.run(_routed(f, calls))
            list(f.map(range(100)))  # warm-up
            started = time.perf_counter()
            got = list(f.map(range(inputs)))
            map_s = time.perf_counter() - started
            assert got == [x + 1 for x in range(inputs)]
            rss = footprint([info["pid"]])["rss_mib"]
    finally:
        client_mod.reset_connection()
        proc.terminate()
        proc.wait(60)
    return {"latency": latency_stats_us(samples), "routed": latency_stats_us(routed), "map_s": map_s,
            "daemon_rss_mib": rss}


async def _routed(f: Any, calls: int) -> list[float]:
    """Latencies of ``await f.remote.aio(x)``: no lease, every call through the daemon (as a container on
    another host than its caller is always reached)."""
    for i in range(100):
        await f.remote.aio(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await f.remote.aio(i)
        samples.append(time.perf_counter() - started)
    return samples


def measure_plain_ray(address: str, inputs: int) -> float:
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(plus_one)
        ray.get([task.remote(x) for x in range(100)])  # warm-up: its workers are up
        started = time.perf_counter()
        got = ray.get([task.remote(x) for x in range(inputs)])
        elapsed = time.perf_counter() - started
        assert got == [x + 1 for x in range(inputs)]
        return elapsed
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--inputs", type=int, default=1000)
    args = parser.parse_args()
    os.environ.update(LOOPBACK)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    root = Path(tempfile.mkdtemp(prefix="rc-bench-ray-"))
    try:
        local = measure_runtime(root / "local", [], args.calls, args.inputs)
        on_ray = measure_runtime(root / "ray", ["--backend", "ray", "--ray-address", cluster.address], args.calls,
                                 args.inputs)
        plain_s = measure_plain_ray(cluster.address, args.inputs)
    finally:
        cluster.shutdown()
    print("| measure | local backend | Ray backend | plain Ray tasks |")
    print("|---|---|---|---|")
    for key, what in (("latency", "warm `.remote()`, leased"), ("routed", "warm `.remote.aio()`, via the daemon")):
        for q in ("p50_us", "p90_us"):
            print(f"| {what} {q[:3]} (µs) | {local[key][q]:.0f} | {on_ray[key][q]:.0f} "
                  f"({on_ray[key][q] / local[key][q]:.2f}x) | |")
    print(f"| {args.inputs}-input map (s) | {local['map_s']:.3f} | {on_ray['map_s']:.3f} | {plain_s:.3f} "
          f"(Ray backend {plain_s / on_ray['map_s']:.2f}x as fast) |")
    print(f"| daemon RSS (MiB) | {local['daemon_rss_mib']:.1f} | {on_ray['daemon_rss_mib']:.1f} | |")


if __name__ == "__main__":
    main()
