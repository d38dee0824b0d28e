"""The host's CPU budget: a function's ``cpu=`` is reserved for each of its containers while it lives."""

from __future__ import annotations

import os


def host_cpus() -> float:
    """``REMOTECELL_CPUS`` (what the runtime may hand out), else the host's CPU count."""
    return float(os.environ.get("REMOTECELL_CPUS") or os.cpu_count() or 1)


class CpuBudget:
    """Reservations in (fractional) cores; functions without ``cpu=`` reserve nothing."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.reserved = 0.0

    def describe(self) -> str:
        return f"{self.reserved:g} of this host's {self.total:g} CPUs reserved"

    def unsatisfiable(self, cpu: float) -> str | None:
        if cpu <= self.total:
            return None
        return f"cpu={cpu:g} cannot be met: this host has {self.total:g} CPUs"

    def acquire(self, cpu: float) -> bool:
        if self.reserved + cpu > self.total + 1e-9:
            return False
        self.reserved += cpu
        return True

    def release(self, cpu: float) -> None:
        self.reserved = max(0.0, self.reserved - cpu)


def thread_env(cpu: float) -> dict[str, str]:
    """Numeric libraries size their thread pools to the reservation, not to the whole host."""
    threads = str(max(1, int(cpu)))
    return {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


class PlacedCpus(CpuBudget):
    """The CPUs of a cluster backend's nodes: its scheduler (Ray) reserves them, nothing is counted here."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def describe(self) -> str:
        return "CPUs are reserved by the Ray cluster"

    def unsatisfiable(self, cpu: float) -> str | None:
        return None

    def acquire(self, cpu: float) -> bool:
        return True
