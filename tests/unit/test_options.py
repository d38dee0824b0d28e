"""Function options are checked where they are given: each bad value's error names it and what is allowed."""

from __future__ import annotations

import pytest
from remotecell.exceptions import InvalidError
from remotecell.options import Cron, Period, Retries, batched, check_function_options, concurrent
from remotecell_runtime.protocol.framing import WireError
from remotecell_runtime.protocol.image_spec import ImageSpec, ImageStep
from remotecell_runtime.protocol.options import FunctionOptions, ScheduleSpec, SecretRef, VolumeMount


@pytest.mark.parametrize(("options", "says"), [
    ({"timeout": 0}, "timeout=0 is out of range: allowed 1 to 86400"),
    ({"timeout": "soon"}, "timeout='soon' must be a number"),
    ({"max_containers": 0}, "max_containers=0 is out of range: allowed 1 to 1000"),
    ({"min_containers": 3, "max_containers": 2}, "min_containers=3 is more than max_containers=2"),
    ({"scaledown_window": 1}, "scaledown_window=1 is out of range: allowed 2 to 3600"),
    ({"cpu": 0.1}, "cpu=0.1 is out of range: allowed 0.125 to 512"),
    ({"memory": 10}, "memory=10 is out of range: allowed 64 to"),
    ({"retries": 11}, "retries=11 is out of range: allowed 0 to 10"),
    ({"retries": "twice"}, "retries='twice' must be an integer from 0 to 10 or rc.Retries"),
    ({"gpu": 3}, "gpu=3 must be a string like 'any'"),
    ({"env": {"A": 1}}, "env={'A': 1} must be a dict of str to str"),
    ({"schedule": "daily"}, "schedule='daily' must be rc.Cron(...) or rc.Period(...)"),
    ({"gpus": "any"}, "unknown function option(s) ['gpus']; known:"),
])
def test_a_bad_option_names_its_value_and_the_allowed_range(options, says):
    with pytest.raises(InvalidError) as info:
        check_function_options(options)
    assert says in str(info.value)


def test_good_options_are_normalized_with_units_in_their_names():
    out = check_function_options({"timeout": 60, "scaledown_window": 5, "retries": 2, "memory": 512})
    assert out["timeout_s"] == 60 and out["scaledown_window_s"] == 5 and out["memory_mib"] == 512
    # retries=N is Modal's fixed delay: N retries 1 s apart
    assert out["retries"] == {"max_retries": 2, "backoff_coefficient": 1.0, "initial_delay_s": 1.0,
                              "max_delay_s": 60.0}
    assert (out["min_containers"], out["max_containers"]) == (0, 100)


@pytest.mark.parametrize(("make", "says"), [
    (lambda: Retries(max_retries=11), "max_retries=11 is out of range: allowed 0 to 10"),
    (lambda: Retries(max_retries=1, initial_delay=61), "initial_delay=61 is out of range: allowed 0 to 60"),
    (lambda: Cron("every day"), "is not a cron expression"),
    (lambda: Cron("0 3 * * *", timezone="Mars/Olympus"), "is not a time zone"),
    (lambda: Period(seconds=0.5), "a period must be at least 1 s"),
    (lambda: batched(max_batch_size=1001, wait_ms=1), "max_batch_size=1001 is out of range: allowed 1 to 1000"),
    (lambda: batched(max_batch_size=8, wait_ms=600_001), "wait_ms=600001 is out of range: allowed 0 to 600000"),
    (lambda: concurrent(max_inputs=0), "max_inputs=0 is out of range"),
])
def test_the_option_objects_check_their_values_where_they_are_made(make, says):
    with pytest.raises(InvalidError) as info:
        make()
    assert says in str(info.value)


def test_what_the_client_sends_reads_as_the_runtimes_options_schema():
    sent = check_function_options({"timeout": 30, "retries": Retries(max_retries=2, initial_delay=0.5),
                                   "memory": 512, "cpu": 2, "max_containers": 3, "env": {"A": "1"},
                                   "schedule": Period(minutes=5)})
    opts = FunctionOptions.from_wire(sent)
    assert (opts.timeout_s, opts.memory_mib, opts.cpu, opts.max_containers, opts.env) == (30, 512, 2, 3, {"A": "1"})
    assert opts.schedule == ScheduleSpec(period_s=300)
    assert [opts.retries.delay_s(n) for n in (1, 2, 3)] == [0.5, 1.0, None]


def test_options_left_out_take_the_runtimes_defaults():
    opts = FunctionOptions.from_wire({})
    assert (opts.timeout_s, opts.max_inputs, opts.inputs_per_container, opts.max_containers) == (300, 1, 1, 100)
    assert opts.retries.delay_s(1) is None and opts.batch_policies() == {}
    assert FunctionOptions.from_wire({"max_inputs": 8, "target_inputs": 6}).inputs_per_container == 6


@pytest.mark.parametrize(("options", "says"), [
    ({"timeout_s": "long"}, "field 'timeout_s' must be a number, got 'long'"),
    ({"retries": {"max_retries": "2"}}, "'RetryPolicy' field 'max_retries' must be an integer"),
    ({"env": []}, "field 'env' must be a JSON object"),
])
def test_a_mistyped_option_is_refused_by_name_when_read(options, says):
    with pytest.raises(WireError, match=says):
        FunctionOptions.from_wire(options)


def test_a_malformed_batch_policy_is_refused_by_name():
    with pytest.raises(WireError, match="option 'batched' of 'embed' must be a JSON object"):
        FunctionOptions.from_wire({"batched": {"embed": 4}}).batch_policies()
    with pytest.raises(WireError, match="'BatchPolicy' message needs 'wait_ms'"):
        FunctionOptions.from_wire({"batched": {"": {"max_batch_size": 4}}}).batch_policies()


def test_nested_options_read_as_their_own_classes():
    opts = FunctionOptions.from_wire({"volumes": {"/data": {"name": "cache", "create": True}},
                                      "secrets": [{"name": "hf"}, {"values": {"MODE": "x"}}],
                                      "image": {"steps": [{"kind": "pip", "packages": ["tabulate"]}]},
                                      "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"}})
    assert opts.volumes == {"/data": VolumeMount(name="cache", create=True)}
    assert opts.secrets == [SecretRef(name="hf"), SecretRef(variables={"MODE": "x"})]
    assert opts.image == ImageSpec(steps=[ImageStep(kind="pip", packages=["tabulate"])])
    assert opts.schedule is not None and opts.schedule.describe() == "cron '0 3 * * *' (Europe/Berlin)"
    assert opts.to_wire()["volumes"] == {"/data": {"name": "cache", "create": True}}


@pytest.mark.parametrize(("raw", "says"), [
    ({"volumes": {"/data": "cache"}}, "'volumes' must be a JSON object of JSON objects"),
    ({"volumes": {"/data": {"oid": 7}}}, "'oid' must be a string or null"),
    ({"secrets": [{"name": 3}]}, "'name' must be a string or null"),
    ({"schedule": {"period_s": "often"}}, "'period_s' must be a number or null"),
])
def test_a_malformed_nested_option_is_refused_by_name(raw, says):
    with pytest.raises(WireError) as info:
        FunctionOptions.from_wire(raw)
    assert says in str(info.value)


def test_images_that_start_alike_share_their_first_layers():
    pip = ImageStep(kind="uv_pip", packages=["tabulate==0.9.0"])
    one = ImageSpec(steps=[pip, ImageStep(kind="env", env={"A": "1"})])
    other = ImageSpec(steps=[pip, ImageStep(kind="env", env={"A": "2"})])
    mounted = ImageSpec(steps=[pip, ImageStep(kind="files", digest="d1", path="/root/src")])
    assert one.layer_keys("s")[:2] == other.layer_keys("s")[:2]
    assert one.layer_keys("s")[2] != other.layer_keys("s")[2]
    assert mounted.layer_keys("s") == one.layer_keys("s")[:2]  # copy=False files are not a layer
    assert [m.digest for m in mounted.mounts] == ["d1"]
    assert one.layer_keys("s") != one.layer_keys("new runtime")


def test_memory_and_cpu_take_a_request_or_a_request_limit_pair():
    sent = check_function_options({"memory": (256, 1024), "cpu": (0.5, 2)})
    opts = FunctionOptions.from_wire(sent)
    assert (opts.memory_mib, opts.memory_limit_mib, opts.memory_cap_mib) == (256, 1024, 1024)
    assert (opts.cpu, opts.cpu_limit) == (0.5, 2)
    assert FunctionOptions.from_wire(check_function_options({"memory": 512})).memory_cap_mib == 512
    with pytest.raises(InvalidError, match=r"memory=\(1024, 256\): the limit 256 is below the request 1024"):
        check_function_options({"memory": (1024, 256)})
    with pytest.raises(InvalidError, match="must be a number or a"):
        check_function_options({"cpu": (1, 2, 3)})


def test_a_container_with_limits_joins_its_groups_before_it_runs():
    from remotecell_runtime.backends.limits import Limits

    argv = Limits.wrap(["/cg/memory/c1/cgroup.procs"], ["python", "-m", "x"])
    assert argv[:2] == ["/bin/sh", "-c"] and "echo $$ > /cg/memory/c1/cgroup.procs" in argv[2]
    assert argv[-3:] == ["python", "-m", "x"] and 'exec "$@"' in argv[2]
    assert Limits.wrap([], ["python"]) == ["python"]
