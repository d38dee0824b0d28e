"""The Ray backend on a real Ray cluster of three nodes on this host (``ray.cluster_utils.Cluster``).

One cluster for the module: a head with no CPUs (no container lands there), a CPU node and a
node with two fake A100s.  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes every node use 127.0.0.1,
so all traffic stays on loopback.  The runtime joins the cluster with ``--backend ray``; its
containers are actors that connect back over tcp:// with CURVE.  The node removal test runs last:
it takes a node away for good.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import remotecell as rc
from conftest import Runtime, own_runtime, wait_for
from remotecell import exceptions

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as env:
        for key, value in LOOPBACK_ENV.items():
            env.setenv(key, value)
        from ray.cluster_utils import Cluster

        # Health checks every 0.5 s: a node that dies is known dead within about 2 s, not Ray's default 15 s.
        health = {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                  "health_check_initial_delay_ms": 0}
        made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                              "_system_config": health})
        cpu_node = made.add_node(num_cpus=2)
        gpu_node = made.add_node(num_cpus=2, num_gpus=2, resources={"accelerator_type:A100": 1})
        made.wait_for_nodes()
        yield {"cluster": made, "cpu": cpu_node, "gpu": gpu_node}
        made.shutdown()


@pytest.fixture(scope="module")
def ray_runtime(cluster, new_home) -> Iterator[Runtime]:
    """A runtime that joined the cluster; the client talks to it for this module."""
    with own_runtime(new_home("ray-home"), args=["--backend", "ray", "--ray-address", cluster["cluster"].address],
                     env=LOOPBACK_ENV) as rt:
        yield rt


def _held(gate: Path, marker: Path | None = None) -> dict[str, str]:
    """Where it runs; it holds its container until ``gate`` exists (after writing ``marker``, if given)."""
    if marker is not None:
        marker.write_text(os.environ["REMOTECELL_RAY_NODE_ID"])
    while not gate.exists():
        time.sleep(0.01)
    return {k: os.environ.get(k, "") for k in ("REMOTECELL_RAY_NODE_ID", "CUDA_VISIBLE_DEVICES", "TOKEN",
                                                "REMOTECELL_TASK_ID")}


def test_containers_on_both_nodes_gpus_only_on_the_gpu_node_and_calls_as_usual(ray_runtime, cluster, tmp_path):
    app = rc.App("ray-places")
    gate = tmp_path / "gate"

    @app.function(cpu=1.5, max_containers=2, secrets=[rc.Secret.from_dict({"TOKEN": "s3cret"})])
    def whole_node(gate: str) -> dict[str, str]:
        return _held(Path(gate))

    @app.function(gpu="A100:1", max_containers=2)
    def on_a100(gate: str) -> dict[str, str]:
        return _held(Path(gate))

    @app.function()
    def square(x: int) -> int:
        return x * x

    with app.run():
        assert square.remote(7) == 49  # a cold start: an actor placed, its key admitted, its process up
        assert list(square.map(range(20))) == [x * x for x in range(20)]
        assert [square.remote(x) for x in range(3)] == [0, 1, 4]
        assert square.stats()["leased"] == 1  # an actor on the daemon's host takes a leaseholder's direct calls
        calls = [whole_node.spawn(str(gate)) for _ in range(2)]  # 1.5 of a node's 2 CPUs: not two on one node
        gpu_calls = [on_a100.spawn(str(gate)) for _ in range(2)]
        wait_for(lambda: whole_node.stats()["running"] == 2 and on_a100.stats()["running"] == 2
                 and len(on_a100.stats()["placements"]) == 2, timeout_s=60, what="four containers to start")
        placements = on_a100.stats()["placements"].values()
        assert all(p.startswith("Ray actor ") for p in placements), placements
        gate.touch()
        got = [c.get(timeout=30) for c in calls]
        gpu_got = [c.get(timeout=30) for c in gpu_calls]
    assert {g["REMOTECELL_RAY_NODE_ID"] for g in got} == {cluster["cpu"].node_id, cluster["gpu"].node_id}
    assert all(g["TOKEN"] == "s3cret" for g in got)  # its secret came over the daemon's channel
    assert all(g["CUDA_VISIBLE_DEVICES"] == "" for g in got)
    assert {g["REMOTECELL_RAY_NODE_ID"] for g in gpu_got} == {cluster["gpu"].node_id}
    assert sorted(g["CUDA_VISIBLE_DEVICES"] for g in gpu_got) == ["0", "1"]  # a device each


def test_an_image_runs_on_the_ray_backend(ray_runtime):
    app = rc.App("ray-image", image=rc.Image.debian_slim().uv_pip_install("six==1.17.0").env({"FROM_IMAGE": "yes"}))

    @app.function()
    def inside() -> dict[str, str]:
        import sys

        import six

        return {"six": six.__version__, "prefix": sys.prefix, "env": os.environ.get("FROM_IMAGE", ""),
                "node": os.environ["REMOTECELL_RAY_NODE_ID"]}

    with app.run():
        got = inside.remote()
    assert got["six"] == "1.17.0" and got["env"] == "yes" and got["node"], got
    assert got["prefix"].startswith(str(ray_runtime.state_dir / "images" / "layers")), got  # the image's venv
    refused = rc.App("ray-image-system", image=rc.Image.debian_slim().apt_install("figlet"))

    @refused.function()
    def never() -> None:
        pass

    with pytest.raises(exceptions.InvalidError, match="without the sandbox.*remotecell status"):
        with refused.run():
            pass


def test_a_spec_no_node_can_hold_fails_fast_naming_what_is_missing(ray_runtime):
    app = rc.App("ray-refuses")

    @app.function(gpu="H100")
    def on_h100() -> int:
        return 1

    @app.function(gpu="A100:4")
    def four_a100s() -> int:
        return 1

    with app.run():
        started = time.monotonic()
        with pytest.raises(exceptions.InvalidError, match=r"no node of the Ray cluster has .*1 GPU of type H100 "
                                                          r"\(short of: accelerator_type:H100"):
            on_h100.remote()
        with pytest.raises(exceptions.InvalidError, match=r"4 GPUs of type A100 \(short of: GPU"):
            four_a100s.remote()
        assert time.monotonic() - started < 10


def test_a_node_removed_mid_spawn_and_the_call_still_completes(ray_runtime, cluster, tmp_path):
    app = rc.App("ray-node-dies")
    gate, marker = tmp_path / "gate", tmp_path / "node"

    @app.function(cpu=1.5)
    def held(gate: str, marker: str) -> dict[str, str]:
        return _held(Path(gate), Path(marker))

    with app.run():
        call = held.spawn(str(gate), str(marker))
        first = wait_for(lambda: marker.exists() and marker.read_text(), timeout_s=60, what="the input to start")
        node = cluster["cpu"] if first == cluster["cpu"].node_id else cluster["gpu"]
        marker.unlink()
        cluster["cluster"].remove_node(node, allow_graceful=False)  # its raylet and its workers are killed
        again = wait_for(lambda: marker.exists() and marker.read_text(), timeout_s=60,
                         what="the input to run again on the other node")
        assert again != first
        gate.touch()
        assert call.get(timeout=30)["REMOTECELL_RAY_NODE_ID"] == again
    assert f"its Ray node {first[:12]} died" in ray_runtime.log_text()
