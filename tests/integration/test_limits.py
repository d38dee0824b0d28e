"""Limits the kernel enforces (cgroups): memory= pairs, cpu= limits, the groups gone afterwards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import remotecell as rc
from conftest import Runtime, wait_for
from remotecell import _client as client_mod
from remotecell import exceptions


def test_a_request_limit_pair_kills_at_the_limit_not_the_request(app):
    @app.function(memory=(128, 384), retries=0)
    def grow(mib):
        block = np.ones(mib * 1024 * 1024 // 8)  # touched: resident
        return block.size * 8 // (1024 * 1024)

    assert grow.remote(256) == 256  # over the request, under the limit: fine
    with pytest.raises(exceptions.ContainerCrashed, match="at its limit of memory=384 MiB"):
        grow.remote(768)


def test_a_cpu_limit_throttles_the_container(app):
    @app.function(cpu=(0.125, 0.25))
    def spin(seconds):
        start_wall, start_cpu = time.monotonic(), time.process_time()
        while time.monotonic() - start_wall < seconds:
            pass
        return (time.process_time() - start_cpu) / (time.monotonic() - start_wall)

    share = spin.remote(2.0)
    assert share < 0.35  # at most a quarter of a core (with slack for the periods at its edges)


def test_the_container_groups_are_removed_when_their_containers_exit(runtime):
    app = rc.App("limits-groups")

    @app.function(memory=256)
    def small():
        return 1

    with app.run():
        assert small.remote() == 1
        live = _container_groups()
        assert live, "no cgroup was made for a container with memory="
    wait_for(lambda: not (set(_container_groups()) & set(live)), what="the stopped containers' cgroups to go")


def _container_groups() -> list[Path]:
    """The cgroups of this runtime's containers (one folder each under the runtime's group)."""
    runtime_id = rc.status()["runtime_id"]
    return [c for g in Path("/sys/fs/cgroup").rglob(f"remotecell-{runtime_id}") if g.is_dir()
            for c in g.iterdir() if c.is_dir()]


def test_single_use_containers_serve_one_input_each(app):
    @app.function(single_use_containers=True, max_containers=2)
    def who(x):
        return os.environ["REMOTECELL_TASK_ID"], x

    assert [x for _, x in who.map(range(5))] == list(range(5))
    assert len({task for task, _ in who.map(range(4))}) == 4  # a new container for every input
    assert len({who.remote(i)[0] for i in range(3)}) == 3  # sequential calls too: no lease keeps one


def test_block_network_needs_the_sandbox(new_home, monkeypatch):
    state = new_home("no-sandbox")
    rt = Runtime(state, env={"REMOTECELL_SANDBOX": "0"})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        app = rc.App("offline")

        @app.function(block_network=True)
        def offline():
            return 1

        with app.run(), pytest.raises(exceptions.InvalidError, match="block_network=True needs the container sandbox"):
            offline.remote()
    finally:
        client_mod.reset_connection()
        rt.stop()
