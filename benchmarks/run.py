"""Benchmark remotecell against ipyparallel, Ray and a raw pyzmq floor, in one run.

    .venv/bin/python benchmarks/run.py [--systems remotecell,ipp,ray,zmq]
        [--workloads latency,roundtrip,cold,container_cold,memory,scaling] [--rounds 3]
        [--runs latency=3,roundtrip=5]

Every system runs in its own process (agent.py) with its own venv's Python. The
runs of each workload are spread over interleaved rounds; in each round every
system starts fresh, is measured, and stops (the system order rotates), then
each gets its cold starts. Prints a markdown table and writes
benchmarks/results/<timestamp>.json. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULT_PREFIX, descendants, group_members, reap
from report import Results, machine, render_table
from systems import SYSTEMS, SystemSpec
from workloads import WORKLOADS, Workload

START_TIMEOUT_S = 180
MEASURE_TIMEOUT_S = 900
COLD_TIMEOUT_S = 180


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class AgentError(Exception):
    pass


class Agent:
    """A system's agent process: JSON commands in, JSON result lines out, the rest to a log."""

    def __init__(self, spec: SystemSpec, args: list[str], scratch: Path, log_path: Path) -> None:
        self.spec = spec
        self.env = {**os.environ, **spec.env}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run: a cold start reads cached bytecode
        if spec.fresh_dir_env:
            self.env[spec.fresh_dir_env] = tempfile.mkdtemp(prefix=f"{spec.name}-", dir=scratch)
        self.log_file = open(log_path, "a")
        self.started = time.time()
        self.proc = subprocess.Popen(
            [str(spec.python), str(HERE / "agent.py"), spec.impl or spec.name, *args],
            cwd=HERE,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pids: set[int] = set()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith(RESULT_PREFIX):
                self.lines.put(line[len(RESULT_PREFIX) :])
            else:
                self.log_file.write(line)
        self.lines.put(None)

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AgentError(f"no answer within {timeout_s:.0f} s") from None
        if line is None:
            raise AgentError(f"the agent exited (code {self.proc.wait()})")
        reply = json.loads(line)
        self.pids.update(reply.get("pids", []))
        if reply.get("ok") is False:
            raise AgentError(reply.get("error", "failed"))
        return reply

    def send(self, cmd: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.result(timeout_s)

    def close(self, ask_stop: bool = True, timeout_s: float = 60) -> None:
        """Ask the system to stop, wait for the agent, then kill by pid whatever it left behind."""
        try:
            if ask_stop and self.proc.poll() is None:
                self.send({"op": "stop"}, timeout_s)
                self.proc.wait(timeout=timeout_s)
        except (AgentError, OSError, subprocess.TimeoutExpired) as exc:
            log(
                f"{self.spec.name}: stop failed ({str(exc).splitlines()[-1]}); "
                "killing its processes"
            )
        leftovers = self.pids | set(self.spec.leftovers(self.env) if self.spec.leftovers else [])
        leftovers |= {self.proc.pid, *descendants(self.proc.pid), *group_members(self.proc.pid)}
        killed = reap(leftovers, grace_s=15)
        self.proc.wait()
        if killed:
            log(f"{self.spec.name}: killed leftover pids {killed}")
        if self.spec.fresh_dir_env:  # e.g. the remotecell runtime's own log
            for path in sorted(Path(self.env[self.spec.fresh_dir_env]).glob("*.log")):
                self.log_file.write(f"--- {path}\n{path.read_text(errors='replace')}")
        self.log_file.close()


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Harness:
    def __init__(
        self,
        args: argparse.Namespace,
        systems: list[SystemSpec],
        workloads: list[Workload],
        out_dir: Path,
    ) -> None:
        self.args = args
        self.systems = systems
        self.workloads = workloads
        self.results = Results(systems, workloads)
        self.scratch = Path(tempfile.mkdtemp(prefix="rcbench-"))
        self.logs = out_dir / f"{args.stamp}-logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def runs_in_round(self, w: Workload, r: int) -> int:
        total, rounds = self.args.runs.get(w.name, w.runs), self.args.rounds
        return total // rounds + (1 if r < total % rounds else 0)

    def run(self) -> None:
        for r in range(self.args.rounds):
            k = r % len(self.systems)
            order = self.systems[k:] + self.systems[:k]
            plan = {w: self.runs_in_round(w, r) for w in self.workloads if w.measure}
            plan = {w: n for w, n in sorted(plan.items(), key=lambda wn: not wn[0].first) if n}
            log(f"round {r + 1}/{self.args.rounds}: " + ", ".join(s.name for s in order))
            for spec in order:
                if plan:
                    self.session(spec, plan)
            for w in (w for w in self.workloads if w.measure is None):
                for spec in order:
                    for _ in range(self.runs_in_round(w, r)):
                        self.cold(spec, w)

    def session(self, spec: SystemSpec, plan: dict[Workload, int]) -> None:
        log_path = self.logs / f"{spec.name}.log"
        agent = Agent(spec, [], self.scratch, log_path)
        try:
            hello = agent.result(START_TIMEOUT_S)
            self.results.versions[spec.name] = hello["versions"]
            for w, n in plan.items():
                try:
                    rows = agent.send(
                        {"op": "measure", "workload": w.name, "runs": n}, MEASURE_TIMEOUT_S
                    )["result"]
                except AgentError as exc:
                    self.fail(spec, w, exc, log_path)
                    if agent.proc.poll() is not None:
                        break
                    continue
                if rows is None:
                    log(f"  {spec.name} {w.name}: not supported")
                    continue
                self.results.add(w, spec, rows)
                log(f"  {spec.name} {w.name}: {self.results.progress(w, spec, rows)}")
        except AgentError as exc:
            for w in plan:
                self.fail(spec, w, exc, log_path)
        finally:
            agent.close()

    def cold(self, spec: SystemSpec, w: Workload) -> None:
        log_path = self.logs / f"{spec.name}-cold.log"
        agent = Agent(spec, ["--cold"], self.scratch, log_path)
        try:
            d = agent.result(COLD_TIMEOUT_S)
            rows = {
                "main": [
                    {
                        "launch_to_result_s": d["t_result"] - agent.started,
                        "interpreter_s": d["t_main"] - agent.started,
                        "import_s": d["t_imported"] - d["t_main"],
                        "start_to_result_s": d["t_result"] - d["t_imported"],
                    }
                ]
            }
            self.results.add(w, spec, rows)
            log(f"  {spec.name} cold: {self.results.progress(w, spec, rows)}")
        except AgentError as exc:
            self.fail(spec, w, exc, log_path)
        finally:
            agent.close(ask_stop=False)  # a cold agent stops its system by itself
        time.sleep(1.0)  # let the machine settle after the shutdown

    def fail(self, spec: SystemSpec, w: Workload, exc: Exception, log_path: Path) -> None:
        msg = str(exc).strip()
        self.results.errors.append({"system": spec.name, "workload": w.name, "error": msg})
        log(
            f"  {spec.name} {w.name}: ERROR {msg.splitlines()[-1] if msg else ''}\n"
            f"    (log {log_path}; last lines:)\n{tail(log_path)}"
        )


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # stop the way Ctrl-C does: each agent's system is stopped and reaped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: %(default)s")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: %(default)s")
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)"
    )
    ap.add_argument(
        "--runs",
        default="",
        help="runs per workload, e.g. latency=1,roundtrip=2 "
        "(defaults: " + ", ".join(f"{w.name}={w.runs}" for w in WORKLOADS.values()) + ")",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where the JSON goes")
    args = ap.parse_args(argv)
    args.runs = {k: int(v) for k, v in (kv.split("=") for kv in args.runs.split(",") if kv)}
    for name in [*args.systems.split(","), *args.workloads.split(","), *args.runs]:
        if name not in SYSTEMS and name not in WORKLOADS:
            ap.error(f"unknown system or workload {name!r}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.stamp = time.strftime("%Y%m%d-%H%M%S")
    return args


def compile_bytecode(spec: SystemSpec) -> None:
    """Cache the bytecode of a remotecell checkout first: a shell that sets PYTHONDONTWRITEBYTECODE would
    otherwise leave its changed modules to be compiled at every cold start, and the old checkout's not."""
    if spec.module != "systems.remotecell_sys":
        return
    code = ("import compileall, os, remotecell, remotecell_runtime\n"
            "for m in (remotecell, remotecell_runtime): compileall.compile_dir(os.path.dirname(m.__file__), quiet=1)")
    subprocess.run([str(spec.python), "-c", code], check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = [WORKLOADS[n] for n in args.workloads.split(",")]
    specs = [SYSTEMS[n] for n in args.systems.split(",")]
    skipped = [why for why in (spec.missing() for spec in specs) if why]
    for why in skipped:
        log(f"skipping {why}")
    systems = [spec for spec in specs if spec.missing() is None]
    if not systems:
        return 2
    for spec in systems:
        compile_bytecode(spec)
    harness = Harness(args, systems, workloads, args.out)
    info = {
        "command": " ".join([sys.executable, *sys.argv]),
        "started_at": time.strftime("%FT%T%z"),
        "rounds": args.rounds,
        "runs": {w.name: args.runs.get(w.name, w.runs) for w in workloads},
        "machine": machine(),
        "skipped": skipped,
    }
    signal.signal(signal.SIGTERM, interrupt)
    try:
        harness.run()
    except KeyboardInterrupt:
        log("interrupted; reporting what was measured")
    finally:
        shutil.rmtree(harness.scratch, ignore_errors=True)
    info["finished_at"] = time.strftime("%FT%T%z")
    info["loadavg_end"] = os.getloadavg()
    table = render_table(harness.results, info)
    print(table)
    path = args.out / f"{args.stamp}.json"
    path.write_text(json.dumps({**info, **harness.results.to_json(), "table": table}, indent=1))
    log(f"wrote {path}")
    return 1 if harness.results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
