"""Web endpoints side by side in one run: the same FastAPI handler behind plain uvicorn and behind remotecell.

Three servers answer ``GET /?x=N`` with ``{"y": N + 1}``:

- ``uvicorn``: the handler in a FastAPI app, one uvicorn process (its default loop and HTTP parser);
- ``gateway``: ``@rc.fastapi_endpoint`` behind the runtime's gateway, one container (``max_containers=1``);
- ``gateway-c50``: the same with ``@rc.concurrent(max_inputs=50)`` (one container, 50 requests at once).

Ray Serve is measured too, in a process of its own, when the Ray anchor's venv (``bash
benchmarks/setup_envs.sh ray``) or this interpreter has it (it is not a dependency).  For each: the
latency of sequential requests on one keep-alive connection (p50/p99), then the throughput of
``--clients`` concurrent keep-alive clients for ``--seconds`` (requests/s, p50/p99).  The client is
one asyncio process (httpx); on a 2-core machine it shares the cores with the servers, so the numbers
compare the servers with each other, not with a big machine.

    .venv/bin/python benchmarks/web.py [--requests 2000] [--clients 32] [--seconds 5]

Prints one line per server and phase; exits 0 either way: speed is reported, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

UVICORN_APP = '''
from fastapi import FastAPI
app = FastAPI()

@app.get("/")
def handler(x: int):
    return {"y": x + 1}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, params={"x": 1}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout_s} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sequential(url: str, n: int) -> list[float]:
    """Latencies (ms) of ``n`` requests one after the other on one connection."""
    out = []
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            started = time.perf_counter()
            r = client.get(url, params={"x": i})
            out.append((time.perf_counter() - started) * 1e3)
            assert r.json() == {"y": i + 1}, r.text
    return out


async def _load(url: str, clients: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one_client(k: int) -> None:
            i = 0
            while time.monotonic() < stop:
                started = time.perf_counter()
                r = await client.get(url, params={"x": i})
                latencies.append((time.perf_counter() - started) * 1e3)
                if r.status_code != 200:
                    raise SystemExit(f"{url}: {r.status_code} {r.text[:200]}")
                i += 1

        await asyncio.gather(*(one_client(k) for k in range(clients)))
    return len(latencies), latencies


def measure(name: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    wait_up(url)
    sequential(url, 200)  # warm
    seq = sequential(url, args.requests)
    count, lat = asyncio.run(_load(url, args.clients, args.seconds))
    row = {"p50_ms": statistics.median(seq), "p99_ms": pct(seq, 0.99), "rps": count / args.seconds,
           "load_p50_ms": statistics.median(lat), "load_p99_ms": pct(lat, 0.99)}
    print(f"{name:12s} sequential p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms | "
          f"{args.clients} clients: {row['rps']:.0f} req/s  p50 {row['load_p50_ms']:.1f} ms  "
          f"p99 {row['load_p99_ms']:.1f} ms", flush=True)
    return row


def run_uvicorn(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    (folder / "plain_app.py").write_text(UVICORN_APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "plain_app:app", "--port", str(port),
                             "--log-level", "warning", "--no-access-log"], cwd=folder)
    try:
        return measure("uvicorn", f"http://127.0.0.1:{port}/", args)
    finally:
        proc.terminate()
        proc.wait()


def run_gateway(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import remotecell as rc

    app = rc.App("bench-web")

    @app.function(max_containers=1)
    @rc.fastapi_endpoint()
    def handler(x: int):
        return {"y": x + 1}

    @app.function(max_containers=1)
    @rc.concurrent(max_inputs=50)
    @rc.fastapi_endpoint(label="handler-c50")
    def handler_c50(x: int):
        return {"y": x + 1}

    rows = {}
    with app.run():
        rows["gateway"] = measure("gateway", handler.get_web_url(), args)
        rows["gateway-c50"] = measure("gateway-c50", handler_c50.get_web_url(), args)
    return rows


RAY_SERVE_APP = '''
import sys
import ray
from fastapi import FastAPI
from ray import serve

web = FastAPI()

@web.get("/")
def handler(x: int):
    return {"y": x + 1}

@serve.deployment
@serve.ingress(web)
class Handler:
    pass

ray.init(include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(Handler.bind(), route_prefix="/")
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes it
serve.shutdown()
ray.shutdown()
'''


def ray_serve_python() -> str | None:
    """An interpreter with Ray Serve: the Ray anchor's venv (benchmarks/setup_envs.sh ray), else this one."""
    anchor = Path(os.environ.get("REMOTECELL_BENCH_VENVS", Path.home() / ".cache" / "remotecell-bench"))
    for python in (str(anchor / "ray" / "bin" / "python"), sys.executable):
        if os.path.exists(python) and subprocess.run([python, "-c", "from ray import serve"],
                                                     capture_output=True).returncode == 0:
            return python
    return None


def run_ray_serve(args: argparse.Namespace, folder: Path) -> dict[str, float] | None:
    """The handler as a Ray Serve deployment over HTTP (its proxy on 127.0.0.1), in a process of its own."""
    python = ray_serve_python()
    if python is None:
        print("ray-serve    not measured: no Ray Serve here (bash benchmarks/setup_envs.sh ray)", flush=True)
        return None
    (folder / "ray_serve_app.py").write_text(RAY_SERVE_APP)
    port = free_port()
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # Ray's nodes on 127.0.0.1 only
    proc = subprocess.Popen([python, str(folder / "ray_serve_app.py"), str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"Ray Serve did not start (exit {proc.wait()})")
        return measure("ray-serve", f"http://127.0.0.1:{port}/", args)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per server")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of the load phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the load phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if "REMOTECELL_RUNTIME" not in os.environ and "REMOTECELL_HOME" not in os.environ:
            os.environ["REMOTECELL_HOME"] = str(Path(tmp) / "home")  # a runtime of its own, started on use
        plain = run_uvicorn(args, Path(tmp))
        ours = run_gateway(args)
        serve = run_ray_serve(args, Path(tmp))
        for name, row in ours.items():
            print(f"{name}: {row['rps'] / plain['rps']:.2f}x uvicorn's throughput, "
                  f"+{row['p50_ms'] - plain['p50_ms']:.2f} ms sequential p50"
                  + (f"; {row['rps'] / serve['rps']:.2f}x Ray Serve's throughput" if serve else ""), flush=True)
        if "REMOTECELL_HOME" in os.environ and os.environ["REMOTECELL_HOME"].startswith(tmp):
            subprocess.run([sys.executable, "-m", "remotecell.cli", "stop"], check=False)


if __name__ == "__main__":
    main()
