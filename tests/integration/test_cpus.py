"""cpu=: each container reserves its share of the host's CPUs; a container starts only when its share is free."""

from __future__ import annotations

import os
import threading
import time

import pytest
import remotecell as rc
import remotecell._client as client_mod
from conftest import Runtime, wait_for
from remotecell import exceptions


@pytest.fixture
def two_cpus(tmp_path, monkeypatch, new_home):
    """A runtime that hands out 2 CPUs, whatever this machine has."""
    state = new_home("cpu-home")
    rt = Runtime(state, env={"REMOTECELL_CPUS": "2"})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    yield rt
    client_mod.reset_connection()
    rt.stop()


def test_cpu_reservations_limit_containers_and_size_thread_pools(two_cpus, tmp_path):
    app = rc.App("cpus")
    gate = tmp_path / "gate"

    @app.function(cpu=2, max_containers=2)
    def heavy(wait):
        while wait and not os.path.exists(wait):
            time.sleep(0.01)
        return os.environ["REMOTECELL_TASK_ID"], os.environ["OMP_NUM_THREADS"]

    @app.function(cpu=3)
    def too_big():
        return 1

    with app.run():
        with pytest.raises(exceptions.InvalidError, match="cpu=3 cannot be met: this host has 2 CPUs"):
            too_big.remote()
        results: list = []
        first = threading.Thread(target=lambda: results.append(heavy.remote(str(gate))))
        first.start()
        wait_for(lambda: heavy.stats()["running"] == 1, what="the first input to run")
        second = heavy.spawn("")  # wants a second container: no CPUs left for one
        wait_for(lambda: heavy.stats().get("waiting_reason", "").startswith("waiting for CPUs (cpu=2; 2 of this "
                                                                            "host's 2 CPUs reserved)"),
                 what="the second input to wait for CPUs")
        gate.touch()
        first.join(30)
        pid, threads = results[0]
        assert second.get(timeout=30) == (pid, "2")  # the one container ran both, in turn
        assert threads == "2"
        assert rc.status()["cpus"] == {"total": 2.0, "reserved": 2.0}


def test_an_idle_container_gives_its_cpus_to_another_function(two_cpus):
    app = rc.App("cpus-reclaim")

    @app.function(cpu=1.5)
    def first():
        return os.environ["REMOTECELL_TASK_ID"]

    @app.function(cpu=1)
    def second():
        return os.environ["REMOTECELL_TASK_ID"]

    with app.run():
        held = first.remote()  # its idle container keeps 1.5 CPUs for the 60 s scale-down window
        assert second.remote() != held  # started after first's idle container was stopped early
        wait_for(lambda: first.stats()["containers"] == {}, what="first's idle container to be gone")
