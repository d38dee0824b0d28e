"""A load-and-fault soak: many clients calling while containers are killed, and one client killed mid-map.

    .venv/bin/python benchmarks/soak.py                 # 10 clients, 60 s, a container killed every 0.5 s
    .venv/bin/python benchmarks/soak.py --clients 4 --seconds 10 --json   # what tests/integration/test_soak.py runs
    .venv/bin/python benchmarks/soak.py --rounds 3      # three soaks on one runtime: does its memory settle?

Each client is its own process with its own ephemeral app: it loops over ``.remote``, ``.map``
and ``.spawn`` of ``inc`` until the time is up, checks every value, and counts the errors by type;
its spawned calls are fetched at the end (none may be lost). Meanwhile the driver SIGKILLs a
random container of the runtime every ``--kill-every-s`` and, half-way, kills one extra client
in the middle of a map. A fresh runtime (its own ``REMOTECELL_HOME``) serves them; its RSS and
open files are read before and after (once the clients are gone and its containers idle out).

An input whose container was killed under it is retried by the runtime (up to 3 times, then it
fails as poison with ``ContainerCrashed``): that error is a clear one, so it counts as an
error, not as a lost or wrong result. A wrong value, any other error, or a spawned call whose
result never comes is a failure. The exit status is 0 when there was none.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CLIENT = textwrap.dedent("""
    import collections, json, sys, time
    import remotecell as rc

    seconds, name = float(sys.argv[1]), sys.argv[2]
    app = rc.App(name)

    @app.function(max_containers=3)
    def inc(x):
        return x + 1

    counts = collections.Counter()
    wrong = []
    handles = []
    with app.run():
        print("ready", flush=True)
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            try:
                got = inc.remote(i)
                counts["remote"] += 1
                if got != i + 1:
                    wrong.append(("remote", i, got))
            except rc.exceptions.ContainerCrashed:
                counts["remote ContainerCrashed"] += 1
            xs = range(i * 1000, i * 1000 + 200)
            for x, got in zip(xs, inc.map(xs, return_exceptions=True)):
                if isinstance(got, rc.exceptions.ContainerCrashed):
                    counts["map ContainerCrashed"] += 1
                elif isinstance(got, BaseException):
                    counts[f"map {type(got).__name__}"] += 1
                    wrong.append(("map", x, repr(got)[:200]))
                else:
                    counts["map"] += 1
                    if got != x + 1:
                        wrong.append(("map", x, got))
            handles.append((i, inc.spawn(i)))
        lost = 0
        for x, handle in handles:
            try:
                got = handle.get(timeout=120)
                counts["spawn"] += 1
                if got != x + 1:
                    wrong.append(("spawn", x, got))
            except rc.exceptions.ContainerCrashed:
                counts["spawn ContainerCrashed"] += 1
            except Exception as exc:
                lost += 1
                wrong.append(("spawn", x, repr(exc)[:200]))
    print(json.dumps({"counts": counts, "wrong": wrong[:20], "n_wrong": len(wrong), "lost_spawns": lost}), flush=True)
""")

VICTIM = textwrap.dedent("""
    import sys
    import remotecell as rc

    app = rc.App("soak-victim")

    @app.function(max_containers=2)
    def slow(x):
        import time
        time.sleep(0.01)
        return x

    with app.run():
        print("mapping", flush=True)
        list(slow.map(range(100_000)))
""")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def containers_of(daemon_pid: int) -> list[int]:
    """The container processes under the daemon (bwrap's, or plain ones): every descendant running the
    container module."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    args: dict[int, str] = {}
    for line in out.splitlines():
        pid, ppid, cmd = line.strip().split(None, 2)
        children.setdefault(int(ppid), []).append(int(pid))
        args[int(pid)] = cmd
    found, todo = [], [daemon_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            command = args[child]
            if "remotecell_runtime.container" in command and not command.startswith(("bwrap", "/usr/bin/bwrap")):
                found.append(child)
    return found


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def soak(home: Path, clients: int, seconds: float, kill_every_s: float) -> dict:
    """One soak against the runtime of ``home`` (started on first use, left running)."""
    env = dict(os.environ, REMOTECELL_HOME=str(home))
    env.pop("REMOTECELL_RUNTIME", None)
    python = sys.executable
    subprocess.run([python, "-c", "import remotecell._client as c; c.connection()"], env=env, check=True)
    daemon = json.loads((home / "connection.json").read_text())["pid"]
    before = {"rss_kib": rss_kib(daemon), "fds": open_fds(daemon)}
    script, victim_script = home / "client.py", home / "victim.py"
    script.write_text(CLIENT)
    victim_script.write_text(VICTIM)
    procs = [subprocess.Popen([python, str(script), str(seconds), f"soak-{n}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for n in range(clients)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    victim = subprocess.Popen([python, str(victim_script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env)
    assert victim.stdout.readline().strip() == "mapping"
    kills, victim_killed, started = 0, False, time.monotonic()
    rng = random.Random(7)
    while any(p.poll() is None for p in procs):
        time.sleep(kill_every_s)
        if not victim_killed and time.monotonic() - started > seconds / 2:
            victim.send_signal(signal.SIGKILL)
            victim_killed = True
        found = containers_of(daemon)
        if found and time.monotonic() - started < seconds:
            try:
                os.kill(rng.choice(found), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    victim.wait(30)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        lines = out.strip().splitlines()
        results.append(json.loads(lines[-1]) if proc.returncode == 0 and lines else
                       {"failed": proc.returncode, "stderr": err[-2000:]})
    idle = wait_until(lambda: not containers_of(daemon), 120)  # the apps stopped: their containers go
    after = {"rss_kib": rss_kib(daemon), "fds": open_fds(daemon), "containers_gone": idle}
    totals: dict[str, int] = {}
    for r in results:
        for key, n in r.get("counts", {}).items():
            totals[key] = totals.get(key, 0) + n
    return {"clients": clients, "seconds": seconds, "containers_killed": kills, "client_killed_mid_map": victim_killed,
            "calls": totals, "wrong": sum(r.get("n_wrong", 0) for r in results),
            "lost_spawns": sum(r.get("lost_spawns", 0) for r in results),
            "clients_failed": [r for r in results if "failed" in r], "daemon_before": before, "daemon_after": after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-every-s", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=1, help="soaks one after another on one runtime")
    parser.add_argument("--json", action="store_true", help="print each round's summary as one JSON line")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rc-soak-"))
    ok = True
    try:
        for _ in range(args.rounds):
            summary = soak(home, args.clients, args.seconds, args.kill_every_s)
            print(json.dumps(summary) if args.json else json.dumps(summary, indent=2), flush=True)
            ok = ok and not summary["wrong"] and not summary["lost_spawns"] and not summary["clients_failed"]
    finally:
        env = dict(os.environ, REMOTECELL_HOME=str(home))
        subprocess.run([sys.executable, "-m", "remotecell.cli", "stop"], env=env, capture_output=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
