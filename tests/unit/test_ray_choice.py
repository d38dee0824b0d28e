"""The Ray backend's pure parts: reading the backend choice, and what a function asks of a node."""

from __future__ import annotations

import pytest
from remotecell_runtime.backends.choice import BackendChoice, BackendChoiceError
from remotecell_runtime.backends.ray import Demand, missing
from remotecell_runtime.protocol.options import FunctionOptions


def test_the_choice_comes_from_options_then_the_environment_and_bad_values_are_named():
    assert BackendChoice.read(None, None, env={}) == BackendChoice()
    choice = BackendChoice.read(None, None, env={"REMOTECELL_BACKEND": "ray", "RAY_ADDRESS": "10.0.0.5:6379"})
    assert (choice.name, choice.ray_address, choice.same_host) == ("ray", "10.0.0.5:6379", False)
    assert BackendChoice.read("ray", "head:6379", env={"RAY_ADDRESS": "x"}).ray_address == "head:6379"
    with pytest.raises(BackendChoiceError, match="--backend 'kube'.*use one of local, ray"):
        BackendChoice.read("kube", None, env={})
    with pytest.raises(BackendChoiceError, match="also give --container-address"):
        BackendChoice.read("ray", None, "tcp://0.0.0.0:7010", env={})
    with pytest.raises(BackendChoiceError, match="--container-address 'ipc:///x'.*tcp://HOST:PORT"):
        BackendChoice.read("ray", None, None, "ipc:///x", env={})


def test_a_demand_names_what_the_closest_node_lacks():
    a100s = {"CPU": 2.0, "GPU": 2.0, "accelerator_type:A100": 1.0}
    cpus = {"CPU": 2.0}
    two = Demand.of(FunctionOptions(gpu="A100:2", cpu=1))
    assert two.actor_options() == {"num_cpus": 1, "num_gpus": 2, "accelerator_type": "A100"}
    assert missing(two, [cpus, a100s]) is None
    h100 = Demand.of(FunctionOptions(gpu="h100"))
    assert missing(h100, [cpus, a100s]) == (
        "no node of the Ray cluster has 0.125 CPUs, 1 GPU of type H100 (short of: accelerator_type:H100; "
        "nodes: 2 CPUs; 2 CPUs, 2 GPUs (A100))")
    assert "short of: CPU" in (missing(Demand.of(FunctionOptions(cpu=4)), [cpus, a100s]) or "")
    assert Demand.of(FunctionOptions(gpu=["H100", "A100"]), choice=1).accelerator == "A100"


def test_a_host_mark_is_seen_only_where_its_file_holds_its_token(tmp_path):
    from remotecell_runtime.backends.ray import HostMark

    mark = HostMark.make(str(tmp_path))
    assert mark.is_here()
    assert not HostMark(mark.path, "another token").is_here()  # a look-alike file elsewhere
    assert not HostMark(str(tmp_path / "not-there"), mark.token).is_here()  # another host: no such file
