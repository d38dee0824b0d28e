"""Collecting the runs, and turning them into medians, the markdown table and the JSON."""

from __future__ import annotations

import os
import platform
import statistics
from typing import Any

from common import summarize
from systems import SystemSpec
from workloads import Workload

Rows = dict[str, list[dict[str, Any]]]
BASELINE = "remotecell"


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per-metric median over runs (numeric metrics only)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


class Results:
    def __init__(self, systems: list[SystemSpec], workloads: list[Workload]) -> None:
        self.systems = systems
        self.workloads = workloads
        self.runs: dict[str, dict[str, Rows]] = {
            w.name: {} for w in workloads
        }  # workload/system/row
        self.versions: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, str]] = []

    def add(self, w: Workload, spec: SystemSpec, rows: Rows) -> None:
        for row, runs in rows.items():
            self.runs[w.name].setdefault(spec.name, {}).setdefault(row, []).extend(runs)

    def progress(self, w: Workload, spec: SystemSpec, rows: Rows) -> str:
        return "; ".join(f"{row} {w.cell(medians(runs))}" for row, runs in rows.items())

    def medians(self, w: Workload, system: str, row: str) -> dict[str, float] | None:
        runs = self.runs[w.name].get(system, {}).get(row)
        return medians(runs) if runs else None

    def rows_of(self, system: str) -> list[str]:
        rows = ["main"]
        for by_system in self.runs.values():
            rows += [r for r in by_system.get(system, {}) if r not in rows]
        return rows

    def failed(self, w: Workload, system: str) -> bool:
        return any(e["workload"] == w.name and e["system"] == system for e in self.errors)

    def to_json(self) -> dict[str, Any]:
        summary = {
            w: {
                s: {
                    row: {k: summarize(r[k] for r in runs) for k in medians(runs)}
                    for row, runs in rows.items()
                }
                for s, rows in by_system.items()
            }
            for w, by_system in self.runs.items()
        }
        return {
            "systems": {
                s.name: {
                    "label": s.label,
                    "api": s.api,
                    "python": str(s.python),
                    "versions": self.versions.get(s.name),
                }
                for s in self.systems
            },
            "summary": summary,
            "runs": self.runs,
            "errors": self.errors,
        }


def ratio_text(value: float, base: float | None) -> str:
    if base is None or base <= 0:
        return ""
    r = value / base
    return f" ({r:.2f}×)" if r < 1 else f" ({r:.1f}×)" if r < 10 else f" ({r:.0f}×)"


def cell(results: Results, w: Workload, spec: SystemSpec, row: str) -> str:
    m = results.medians(w, spec.name, row)
    if m is None:
        return "error" if row == "main" and results.failed(w, spec.name) else "—"
    base = results.medians(w, BASELINE, "main") if spec.name != BASELINE else None
    return w.cell(m) + ratio_text(m[w.ratio_metric], base[w.ratio_metric] if base else None)


def render_table(results: Results, info: dict[str, Any]) -> str:
    ws = results.workloads
    lines = ["| system | " + " | ".join(w.title for w in ws) + " |", "|---" * (len(ws) + 1) + "|"]
    for spec in results.systems:
        for row in results.rows_of(spec.name):
            label = spec.label if row == "main" else f"{spec.label}: {row}"
            lines.append(
                f"| {label} | " + " | ".join(cell(results, w, spec, row) for w in ws) + " |"
            )
    runs = ", ".join(f"{k} {v}" for k, v in info["runs"].items())
    m = info["machine"]
    note = (
        f"Each cell: the median over runs ({runs}) spread over {info['rounds']} interleaved "
        "round(s). (N×) = the system's value ÷ remotecell's (latency: p50; 100 MB: seconds; "
        "new worker: ms; map: seconds for all its tasks, i.e. remotecell's tasks/s ÷ the system's): "
        "above 1× remotecell is faster / smaller."
    )
    host = (
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['mem_gib']:.0f} GiB, {m['platform']}; "
        f"load average {m['loadavg_start'][0]:.2f} at the start, "
        f"{info['loadavg_end'][0]:.2f} at the end."
    )
    lines += ["", note, host]
    for spec in results.systems:
        v = results.versions.get(spec.name) or {}
        pins = ", ".join(f"{k} {val}" for k, val in v.items() if val)
        lines.append(f"- {spec.label}: {spec.api}" + (f"; {pins}" if pins else ""))
    lines += [f"- SKIPPED {why}" for why in info["skipped"]]
    for e in results.errors:
        lines.append(
            f"- ERROR {e['system']} {e['workload']}: {e['error'].strip().splitlines()[-1]}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    def first(path: str, key: str) -> str:
        try:
            with open(path) as f:
                return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), "?")
        except OSError:
            return "?"

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "mem_gib": int(first("/proc/meminfo", "MemTotal").split()[0]) / 2**20,
        "loadavg_start": os.getloadavg(),
    }
