"""What the runtime is doing: GPUs, apps, containers per function, queue depths."""

from __future__ import annotations

from typing import Any

from remotecell_runtime.protocol.messages.session import StatusMsg, StatusReply

from . import _client


class RuntimeStatus(dict[str, Any]):
    """The runtime's status as a dict, shown as a short report.

    >>> rc.status()
    runtime 9860fc2d (pid 6380) on ipc:///home/me/.remotecell/sock/runtime.sock
      python 3.11.7, remotecell 0.1.0, cloudpickle 3.1.3
      GPUs: none; free: []; CPUs reserved: 1 of 2
      apps: 1, client sessions: 1
      containers sandboxed: bubblewrap 0.8.0; memory and cpu limits enforced (cgroup v1)
      system images (apt_install, run_commands, run_function, from_registry): Debian bookworm base systems ...
      square: 2 idle (1 leased); 0 queued, 0 running
      web gateway: http://127.0.0.1:8190
      endpoint demo/predict => http://127.0.0.1:8190/demo/predict/
    """

    def __repr__(self) -> str:
        v = self["versions"]
        lines = [
            f"runtime {self['runtime_id']} (pid {self['pid']}) on {', '.join(self['endpoints'])}",
            f"  python {v['python']}, remotecell {v['remotecell']}, cloudpickle {v['cloudpickle']}",
            f"  GPUs: {', '.join(g['name'] for g in self['gpus']) or 'none'}; free: {self['gpus_free']}"
            + _cpus(self.get("cpus")),
            f"  apps: {len(self['apps'])}, client sessions: {self['sessions']}",
            f"  containers sandboxed: {self.get('sandbox', 'unknown')}; {self.get('limits', '')}",
        ]
        if self.get("system_images"):
            lines.append(f"  system images (apt_install, run_commands, run_function, from_registry): "
                         f"{self['system_images']}")
        for pool in self["pools"]:
            containers = ", ".join(f"{n} {state}" for state, n in pool["containers"].items()) or "no containers"
            if pool.get("leased"):  # lent to a blocking caller: its calls skip the runtime's router
                containers += f" ({pool['leased']} leased)"
            waiting = f" ({pool['waiting_reason']})" if pool.get("waiting_reason") else ""
            lines.append(f"  {pool['function']}: {containers}; {pool['queued']} queued{waiting}, "
                         f"{pool['running']} running")
        web = self.get("web") or {}
        if web.get("url"):
            lines.append(f"  web gateway: {web['url']}")
            for name, url in sorted((web.get("endpoints") or {}).items()):
                lines.append(f"  endpoint {name} => {url}")
            for domain, name in sorted((web.get("domains") or {}).items()):
                lines.append(f"  domain {domain} => endpoint {name}")
        for sb in self.get("sandboxes") or []:
            why = f" ({sb['reason']})" if sb.get("reason") else ""
            lines.append(f"  sandbox {sb['id']}: {sb['status']}{why}; {' '.join(sb.get('cmd') or []) or '(idle)'}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # notebooks show this instead of the text
        from .widgets.status import status_html

        return status_html(self)


def _cpus(cpus: dict[str, float] | None) -> str:
    return f"; CPUs reserved: {cpus['reserved']:g} of {cpus['total']:g}" if cpus else ""


def status() -> RuntimeStatus:
    """Ask the runtime what it is doing (starts the local runtime if none runs)."""
    return RuntimeStatus(_client.connection().ask(StatusMsg(), StatusReply).values())
