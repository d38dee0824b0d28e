"""The host's GPU inventory and exclusive assignment of devices to containers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int  # nvidia-smi's (and, with CUDA_DEVICE_ORDER=PCI_BUS_ID, CUDA's)
    name: str
    memory_mib: int | None = None
    minor: int | None = None  # its device file is /dev/nvidia<minor> (None: not known, e.g. no driver info)


def inventory() -> list[Gpu]:
    """GPUs of this host: REMOTECELL_FAKE_GPUS="H100,H100" for tests (minor numbers = indices), else nvidia-smi."""
    fake = os.environ.get("REMOTECELL_FAKE_GPUS")
    if fake is not None:
        return [Gpu(i, name.strip(), minor=i) for i, name in enumerate(fake.split(",")) if name.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total,pci.bus_id", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, name, memory, bus_id = (part.strip() for part in line.split(","))
        gpus.append(Gpu(int(index), name, int(memory) if memory.isdigit() else None, _minor(bus_id)))
    return gpus


def _minor(bus_id: str) -> int | None:
    """The device minor number the driver gave the GPU at ``bus_id`` (nvidia-smi's ``00000000:17:00.0``)."""
    domain, _, rest = bus_id.partition(":")
    path = f"/proc/driver/nvidia/gpus/{domain[-4:]}:{rest}".lower() + "/information"
    try:
        with open(path) as info:
            for line in info:
                if line.startswith("Device Minor:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def parse_spec(spec: str | list[str]) -> list[tuple[str, int]]:
    """'any' / 'H100' / 'any:2' / ['H100', 'A100'] -> [(kind, count), ...] in order of preference."""
    out = []
    for item in [spec] if isinstance(spec, str) else spec:
        kind, _, count = item.partition(":")
        out.append((kind.strip() or "any", int(count) if count else 1))
    return out


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s_-]+", name.lower()) if w]


def _matches(kind: str, gpu: Gpu) -> bool:
    """Whether a GPU type as Modal names it fits this device: each word of the type is a word of the device's
    name, so "A100-80GB" is an "NVIDIA A100-SXM4-80GB" and "H100" an "NVIDIA H100 80GB HBM3", but "A10" is
    not an A100."""
    if kind.lower() == "any":
        return True
    have = _words(gpu.name)
    return all(word in have for word in _words(kind))


class GpuAllocator:
    """Hands out whole devices; a device belongs to one container at a time."""

    def __init__(self, gpus: list[Gpu]) -> None:
        self.gpus = gpus
        self.free = {g.index for g in gpus}

    def describe(self) -> str:
        if not self.gpus:
            return "this host has no GPUs"
        return "this host has " + ", ".join(f"{g.index}: {g.name}" for g in self.gpus)

    def unsatisfiable(self, spec: str | list[str]) -> str | None:
        """Why no GPU of this host could ever meet ``spec``, or None if some could."""
        for kind, count in parse_spec(spec):
            if sum(_matches(kind, g) for g in self.gpus) >= count:
                return None
        return f"gpu={spec!r} cannot be met: {self.describe()}"

    def acquire(self, spec: str | list[str]) -> list[int] | None:
        for kind, count in parse_spec(spec):
            fits = [g.index for g in self.gpus if g.index in self.free and _matches(kind, g)]
            if len(fits) >= count:
                chosen = fits[:count]
                self.free.difference_update(chosen)
                return chosen
        return None

    def minors(self, indices: tuple[int, ...] | list[int]) -> list[int] | None:
        """The device minor numbers of GPUs ``indices``; None when one is not known (then every device
        file is given, and CUDA_VISIBLE_DEVICES alone picks)."""
        by_index = {g.index: g.minor for g in self.gpus}
        minors = [by_index.get(i) for i in indices]
        return None if any(m is None for m in minors) else [m for m in minors if m is not None]

    def release(self, indices: list[int]) -> None:
        self.free.update(indices)


class PlacedGpus(GpuAllocator):
    """The GPUs of a cluster backend's nodes: its scheduler (Ray) picks the devices, so every request is granted
    here and nothing is held; ``check`` of the backend refuses what no node has."""

    def __init__(self) -> None:
        super().__init__([])

    def describe(self) -> str:
        return "GPUs are placed by the Ray cluster (each container gets the devices Ray gives it)"

    def unsatisfiable(self, spec: str | list[str]) -> str | None:
        return None

    def acquire(self, spec: str | list[str]) -> list[int] | None:
        return []
