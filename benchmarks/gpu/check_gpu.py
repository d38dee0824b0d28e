"""Check remotecell's GPU assignment on a machine with NVIDIA GPUs (see benchmarks/README.md).

    .venv/bin/python benchmarks/gpu/check_gpu.py

Starts a runtime of its own (a fresh REMOTECELL_HOME in a temp dir; stopped at the end), prints
one line per check and exits 1 if any failed:
  (a) a gpu="any" function sees exactly one device (torch.cuda.device_count() == 1), the one its
      CUDA_VISIBLE_DEVICES names (its UUID is nvidia-smi's for that index);
  (b) two concurrent calls on max_containers=2 run on different devices when the host has two or
      more GPUs; with one GPU, the second call waits for the first;
  (c) torch.ones(3, device="cuda") returned by a function arrives as a CPU tensor equal to
      torch.ones(3);
  (d) in the container sandbox (bubblewrap), a gpu="any" container has exactly one GPU device file
      (/dev/nvidia<N>) and torch computes on it.
"""

from __future__ import annotations

import asyncio
import os
import string
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import remotecell as rc
import torch
from private_runtime import HOME, stop_runtime
from remotecell import _client
from remotecell.exceptions import InvalidError

HOLD_S = 2.0
app = rc.App("gpu-check")  # each check runs the app anew, so it starts with every GPU free


def hex_id(uuid: str) -> str:
    """A device UUID as bare hex digits: nvidia-smi writes "GPU-" and dashes, torch only dashes."""
    return "".join(c for c in uuid.lower() if c in string.hexdigits)


def device_info() -> dict[str, Any]:
    """What a container sees: its CUDA_VISIBLE_DEVICES and torch's devices."""
    count = torch.cuda.device_count()
    return {
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "count": count,
        "name": torch.cuda.get_device_name(0) if count else None,
        "uuid": hex_id(str(torch.cuda.get_device_properties(0).uuid)) if count else None,
        "pid": os.getpid(),
        "device_files": sorted(n for n in os.listdir("/dev") if n.startswith("nvidia") and n[6:].isdigit()),
    }


@app.function(gpu="any")
def one_gpu() -> dict[str, Any]:
    return device_info()


@app.function(gpu="any", max_containers=2)
def hold(seconds: float) -> dict[str, Any]:
    start = time.time()
    torch.ones(1, device="cuda")  # use the device, not just see it
    time.sleep(seconds)
    return {**device_info(), "start": start, "end": time.time()}


@app.function(gpu="any")
def cuda_ones() -> Any:
    return torch.ones(3, device="cuda")


def host_gpus() -> dict[str, str]:
    """nvidia-smi's index -> UUID of this host's GPUs."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = (line.split(",") for line in out.strip().splitlines())
    return {index.strip(): hex_id(uuid) for index, uuid in pairs}


def runtime_status() -> dict[str, Any]:
    return _client.connection().request({"t": "status"})


def wait_gpus_free(timeout_s: float = 15) -> None:
    """Once the app stopped, its containers exit and give their GPUs back."""
    deadline = time.monotonic() + timeout_s
    while len((status := runtime_status())["gpus_free"]) < len(status["gpus"]):
        assert time.monotonic() < deadline, (
            f"{timeout_s:g} s after the app stopped only GPUs {status['gpus_free']} are free"
        )
        time.sleep(0.1)


def run_check(check: Callable[[], str]) -> str:
    with app.run():
        result = check()
    wait_gpus_free()
    return result


def check_one_device() -> str:
    got = one_gpu.remote()
    assert got["count"] == 1, f"the container sees {got['count']} devices: {got}"
    expected = host_gpus().get(got["visible"] or "")
    assert got["uuid"] == expected, (
        f"CUDA_VISIBLE_DEVICES={got['visible']} but the device is {got['uuid']}, "
        f"not nvidia-smi's GPU {got['visible']} ({expected})"
    )
    return f"1 device, {got['name']}, CUDA_VISIBLE_DEVICES={got['visible']}"


async def two_holds() -> list[dict[str, Any]]:
    return list(await asyncio.gather(hold.remote.aio(HOLD_S), hold.remote.aio(HOLD_S)))


def check_two_containers() -> str:
    gpus = len(runtime_status()["gpus"])
    t0 = time.monotonic()
    first, second = sorted(asyncio.run(two_holds()), key=lambda r: r["start"])
    wall = time.monotonic() - t0
    seen = f"CUDA_VISIBLE_DEVICES {first['visible']} and {second['visible']}, {wall:.1f} s"
    if gpus >= 2:
        assert first["visible"] != second["visible"], f"{gpus} GPUs but one device for both: {seen}"
        assert first["uuid"] != second["uuid"], f"different indices, same device: {seen}"
        assert second["start"] < first["end"], f"the calls did not overlap: {seen}"
        return f"{gpus} GPUs: two containers on different devices at once ({seen})"
    assert second["start"] >= first["end"] - 0.1, f"1 GPU, yet the calls overlapped: {seen}"
    return f"1 GPU only: the second call waited for the first ({seen})"


def check_sandboxed_device_files() -> str:
    sandbox = runtime_status().get("sandbox", "")
    assert not sandbox.startswith("off"), f"containers are not sandboxed here: {sandbox}"
    got = one_gpu.remote()
    assert len(got["device_files"]) == 1, f"the container has GPU device files {got['device_files']}"
    assert got["count"] == 1, f"torch sees {got['count']} devices: {got}"
    total = cuda_sum.remote()
    assert total == 6.0, f"torch on the GPU summed torch.ones(6) to {total}"
    return f"{sandbox}: only /dev/{got['device_files'][0]}, torch computes on {got['name']}"


@app.function(gpu="any")
def cuda_sum() -> float:
    return float(torch.ones(6, device="cuda").sum())


def check_cuda_tensor() -> str:
    got = cuda_ones.remote()
    assert isinstance(got, torch.Tensor), f"got a {type(got).__name__}, not a tensor"
    assert got.device.type == "cpu", f"it arrived on {got.device}"
    assert torch.equal(got, torch.ones(3)), f"it arrived as {got}"
    return f"arrived as {got} on the CPU"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ('(a) gpu="any" sees one device', check_one_device),
    ("(b) two concurrent containers", check_two_containers),
    ("(c) a CUDA tensor comes back", check_cuda_tensor),
    ("(d) a sandboxed container has only its GPU's device file", check_sandboxed_device_files),
]


def main() -> int:
    print(f"remotecell GPU check: torch {torch.__version__}, REMOTECELL_HOME={HOME}")
    failed = 0
    try:
        for label, check in CHECKS:
            try:
                print(f"PASS {label}: {run_check(check)}", flush=True)
            except InvalidError as exc:  # e.g. the runtime found no GPU: no check can run
                print(f"FAIL {label}: {exc}\nstopping here: no GPU function can run on this host")
                failed = len(CHECKS)
                break
            except Exception as exc:
                failed += 1
                print(f"FAIL {label}: {type(exc).__name__}: {exc}", flush=True)
    finally:
        app.stop()
        stop_runtime()
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
