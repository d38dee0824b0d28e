"""``rc.status()`` in a notebook: the runtime as a small HTML report (GPUs, containers per function, queues).

Plain HTML (no ipywidgets needed), so it also survives in a saved notebook.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STATES = ("starting", "idle", "busy", "stopping")


def status_html(status: dict[str, Any]) -> str:
    """The HTML of one runtime status (the dict ``rc.status()`` returns)."""
    v = status["versions"]
    free = set(status.get("gpus_free", []))
    gpus = ", ".join(f"{escape(str(g['index']))}: {escape(g['name'])} ({'free' if g['index'] in free else 'in use'})"
                     for g in status["gpus"]) or "none"
    head = (f"<b>remotecell runtime</b> {escape(status['runtime_id'])} (pid {status['pid']}) on "
            f"<code>{escape(', '.join(status['endpoints']))}</code><br>"
            f"python {escape(v['python'])}, remotecell {escape(v['remotecell'])}; "
            f"{len(status['apps'])} app(s), {status['sessions']} client session(s)<br>GPUs: {gpus}")
    cpus = status.get("cpus")
    if cpus:
        head += f"; CPUs reserved: {cpus['reserved']:g} of {cpus['total']:g}"
    columns = ["function", *_STATES, "leased", "queued", "running", "waiting for"]
    rows = []
    for pool in status["pools"]:
        cells = [escape(pool["function"]), *(str(pool["containers"].get(s, 0)) for s in _STATES),
                 str(pool.get("leased", 0)), str(pool["queued"]), str(pool["running"]),
                 escape(pool.get("waiting_reason") or "")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    boxes = "".join(_sandbox_line(sb) for sb in status.get("sandboxes") or [])
    if not rows:
        return head + "<br><i>no functions registered</i>" + boxes
    header = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    return f"{head}<table>{header}{''.join(rows)}</table>{boxes}"


def _sandbox_line(sb: dict[str, Any]) -> str:
    why = f" ({sb['reason']})" if sb.get("reason") else ""
    cmd = " ".join(sb.get("cmd") or []) or "(idle)"
    return f"<br>sandbox <code>{escape(sb['id'])}</code>: {escape(sb['status'] + why)}; <code>{escape(cmd)}</code>"
