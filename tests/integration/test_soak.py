"""The short soak (``benchmarks/soak.py``): clients calling while containers are killed lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
SLACK_FDS = 6  # "within a few": a lazily made socket or pipe of the runtime's own may come and go


@pytest.mark.timeout(400)
def test_calls_survive_killed_containers_and_a_client_killed_mid_map():
    done = subprocess.run([sys.executable, str(SOAK), "--clients", "3", "--seconds", "8", "--json"],
                          capture_output=True, text=True, timeout=380)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, summary
    assert summary["containers_killed"] >= 3 and summary["client_killed_mid_map"], summary
    assert summary["calls"].get("remote", 0) > 0 and summary["calls"].get("map", 0) > 0, summary
    assert summary["calls"].get("spawn", 0) > 0 and summary["lost_spawns"] == 0 and summary["wrong"] == 0
    after, before = summary["daemon_after"], summary["daemon_before"]
    assert after["containers_gone"] and after["fds"] <= before["fds"] + SLACK_FDS, summary
