"""The host's GPU inventory and exclusive assignment of devices to containers."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int | None = None


def inventory() -> list[Gpu]:
    """GPUs of this host: REMOTECELL_FAKE_GPUS="H100,H100" for tests, else nvidia-smi."""
    fake = os.environ.get("REMOTECELL_FAKE_GPUS")
    if fake is not None:
        return [Gpu(i, name.strip()) for i, name in enumerate(fake.split(",")) if name.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, name, memory = (part.strip() for part in line.split(","))
        gpus.append(Gpu(int(index), name, int(memory) if memory.isdigit() else None))
    return gpus


def parse_spec(spec: str | list[str]) -> list[tuple[str, int]]:
    """'any' / 'H100' / 'any:2' / ['H100', 'A100'] -> [(kind, count), ...] in order of preference."""
    out = []
    for item in [spec] if isinstance(spec, str) else spec:
        kind, _, count = item.partition(":")
        out.append((kind.strip() or "any", int(count) if count else 1))
    return out


def _matches(kind: str, gpu: Gpu) -> bool:
    return kind.lower() == "any" or kind.lower() in gpu.name.lower()


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

    def release(self, indices: list[int]) -> None:
        self.free.update(indices)
