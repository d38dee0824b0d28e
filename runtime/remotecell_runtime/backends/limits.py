"""Container limits through the host's cgroups: memory (killed over its cap), CPU (throttled over its limit).

Each container with a limit gets a group of its own under the runtime's group
(``remotecell-<runtime id>`` beside the daemon's own: cgroup v1's ``memory`` and
``cpu`` hierarchies, or v2's one).  The group is made before the container
starts and its first process joins it before anything else runs (a tiny ``sh``
writes its own pid, then execs the container), so every process the container
ever forks is inside.  A container the kernel's OOM killer ended is told by its
group's ``oom_kill`` count.

Invariants: nothing here runs for a container without limits; a group is
removed once its container has exited; a host where groups cannot be made
(no cgroup fs, no permission, v2 without delegated controllers) enforces
nothing, and ``describe`` says why.
"""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000  # the CPU quota's period (cgroups' default)


class Limits:
    """The cgroups of one runtime's containers.

    Example::

        limits, why = Limits.find("9860fc2d")
        procs = limits.prepare("c-1", memory_mib=512, cpu_limit=1.5) if limits else []
        argv = Limits.wrap(procs, ["python", "-m", "remotecell_runtime.container"])
    """

    def __init__(self, version: int, groups: dict[str, Path]) -> None:
        self.version = version
        self.groups = groups  # controller ("memory", "cpu"; v2: "unified") -> the runtime's group

    @property
    def describe(self) -> str:
        return f"memory and cpu limits enforced (cgroup v{self.version})"

    @classmethod
    def find(cls, runtime_id: str) -> tuple[Limits | None, str]:
        """This host's limits, made ready, or None and why they are not enforced."""
        name = f"remotecell-{runtime_id}"
        try:
            if (ROOT / "cgroup.controllers").exists():
                return cls(2, {"unified": _v2_group(name)}), ""
            groups = {c: _v1_group(c, name) for c in ("memory", "cpu")}
        except OSError as exc:
            return None, f"memory and cpu limits are not enforced here ({exc}); memory= is watched by polling"
        return cls(1, groups), ""

    def prepare(self, cid: str, memory_mib: int | None, cpu_limit: float | None) -> list[str]:
        """Make the container's groups with its limits; the ``cgroup.procs`` files it must join."""
        if memory_mib is None and cpu_limit is None:
            return []
        procs = []
        for controller, runtime_group in self.groups.items():
            group = runtime_group / cid
            group.mkdir(exist_ok=True)
            if memory_mib is not None and controller in ("memory", "unified"):
                self._limit_memory(group, memory_mib * 1024 * 1024)
            if cpu_limit is not None and controller in ("cpu", "unified"):
                self._limit_cpu(group, cpu_limit)
            procs.append(str(group / "cgroup.procs"))
        return procs

    def _limit_memory(self, group: Path, limit: int) -> None:
        if self.version == 2:
            _write(group / "memory.max", str(limit))
            _write_if_there(group / "memory.swap.max", "0")  # over the cap means killed, not swapped
            return
        _write(group / "memory.limit_in_bytes", str(limit))
        _write_if_there(group / "memory.memsw.limit_in_bytes", str(limit))

    def _limit_cpu(self, group: Path, cores: float) -> None:
        quota = max(1000, int(cores * PERIOD_US))
        if self.version == 2:
            _write(group / "cpu.max", f"{quota} {PERIOD_US}")
            return
        _write(group / "cpu.cfs_period_us", str(PERIOD_US))
        _write(group / "cpu.cfs_quota_us", str(quota))

    @staticmethod
    def wrap(procs: list[str], command: list[str]) -> list[str]:
        """``command``, started inside the groups whose ``cgroup.procs`` are given (unchanged without any)."""
        if not procs:
            return command
        joins = " && ".join(f"echo $$ > {shlex.quote(p)}" for p in procs)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "remotecell-container", *command]

    def oom_killed(self, cid: str) -> bool:
        """Whether the kernel's OOM killer ended a process of the container's group."""
        group = self.groups.get("unified") or self.groups.get("memory")
        if group is None:
            return False
        events = group / cid / ("memory.events" if self.version == 2 else "memory.oom_control")
        try:
            fields = dict(line.split() for line in events.read_text().splitlines() if len(line.split()) == 2)
        except OSError:
            return False
        return int(fields.get("oom_kill", "0")) > 0

    def release(self, cid: str) -> bool:
        """Remove the container's groups; False while one still holds a process (a sandbox's init may outlive
        bwrap's exit by a moment), to be tried again."""
        done = True
        for runtime_group in self.groups.values():
            try:
                (runtime_group / cid).rmdir()
            except FileNotFoundError:
                pass  # never made (no limits), or already gone
            except OSError:
                done = False
        return done


def _own_path(controller: str) -> str:
    """This process's group in the hierarchy of ``controller`` ("" for v2's), from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise OSError(f"this process is in no {controller or 'unified'} cgroup")


def _v1_mount(controller: str) -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, options, *_ = line.split()
        if fstype == "cgroup" and controller in options.split(","):
            return Path(mount)
    raise OSError(f"no cgroup v1 hierarchy has the {controller} controller")


def _v1_group(controller: str, name: str) -> Path:
    group = _v1_mount(controller) / _own_path(controller).lstrip("/") / name
    group.mkdir(exist_ok=True)
    return group


def _v2_group(name: str) -> Path:
    group = ROOT / _own_path("").lstrip("/") / name
    group.mkdir(exist_ok=True)
    # Children of our group get the controllers only if our group delegates them (fails when it may not).
    _write(group / "cgroup.subtree_control", "+memory +cpu")
    return group


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _write_if_there(path: Path, value: str) -> None:
    if path.exists():
        _write(path, value)
