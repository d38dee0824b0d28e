"""Modal's names that issue 14 adds, through the public API against a real runtime: introspection, the stores'
ids and namespaces, and the options Modal accepts (``max_inputs``, ``startup_timeout``, ``@enter(snap=True)``)."""

from __future__ import annotations

import datetime
import os
import secrets

import pytest
import remotecell as rc
from remotecell import exception


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_introspection_inside_and_outside_a_container(app):
    @app.function()
    def where():
        import remotecell as inner

        return inner.is_local(), inner.current_input_id(), inner.current_function_call_id(), os.getpid()

    assert rc.is_local() and rc.current_input_id() is None and rc.current_function_call_id() is None
    local, input_id, call_id, _ = where.remote()
    assert local is False and input_id and call_id == input_id
    assert where.local()[0] is True
    spawned = where.spawn()
    _, input_id, call_id, _ = spawned.get(timeout=60)
    assert call_id == spawned.object_id and input_id == spawned.object_id

    @app.function()
    def call_of(x):
        import remotecell as inner

        return inner.current_function_call_id()

    group = call_of.spawn_map([1, 2])
    assert set(group.get(timeout=60)) == {group.object_id}


def test_get_current_stats_counts_backlog_and_containers(app):
    import threading

    gate = rc.Dict.from_name(_name("gate"), create_if_missing=True)

    @app.function(max_containers=1)
    def hold(d):
        import time

        while not d.get("go"):
            time.sleep(0.05)
        return 1

    stats = hold.get_current_stats()
    assert type(stats).__name__ == "FunctionStats"
    assert (stats.backlog, stats.num_total_runners) == (0, 0)
    calls = [hold.spawn(gate) for _ in range(3)]
    from conftest import wait_for

    wait_for(lambda: (s := hold.get_current_stats()).backlog == 2 and s.num_running_inputs == 1
             and s.num_total_runners == 1, what="one running, two waiting")
    gate["go"] = True
    assert [c.get(timeout=60) for c in calls] == [1, 1, 1]
    threading.Event().wait(0)  # nothing else to wait for: the calls are done
    assert hold.get_current_stats().backlog == 0


def test_max_inputs_gives_each_container_that_many_inputs(app):
    @app.function(max_inputs=2, max_containers=1)
    def pid(_):
        return os.environ["REMOTECELL_TASK_ID"]

    pids = [pid.remote(i) for i in range(6)]
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [2, 2, 2], pids


def test_startup_timeout_stops_a_container_that_does_not_become_ready(app):
    @app.cls(startup_timeout=1, max_containers=1)
    class Slow:
        @rc.enter()
        def load(self):
            import time

            time.sleep(30)

        @rc.method()
        def ping(self):
            return "pong"

    with pytest.raises(exception.ExecutionError, match="did not start within startup_timeout=1 s"):
        Slow().ping.remote()


def test_snap_hooks_run_first_in_the_order_they_are_defined(app):
    @app.cls(enable_memory_snapshot=True, region="us-east")
    class Model:
        @rc.enter()
        def b_after(self):
            self.order.append("after")

        @rc.enter(snap=True)
        def z_first(self):
            self.order = ["snap1"]

        @rc.enter(snap=True)
        def a_second(self):
            self.order.append("snap2")

        @rc.method()
        def order_of_hooks(self):
            return self.order

    assert Model().order_of_hooks.remote() == ["snap1", "snap2", "after"]


def test_dict_and_queue_ids_namespaces_and_info(runtime):
    name = _name("surface")
    rc.Dict.objects.create(name)
    with pytest.raises(exception.AlreadyExistsError, match="exists already: pass allow_existing=True"):
        rc.Dict.objects.create(name)
    rc.Dict.objects.create(name, allow_existing=True)
    d = rc.Dict.from_name(name, environment_name="main")
    assert d.object_id.startswith("di-")
    d["k"] = 1
    again = rc.Dict.from_id(d.object_id)
    assert again.name == name and again["k"] == 1 and again.object_id == d.object_id
    info = d.info()
    assert info.name == name and info.created_by is None
    assert abs(info.created_at.timestamp() - datetime.datetime.now().timestamp()) < 120
    assert name in [x.name for x in rc.Dict.objects.list()]
    assert [x.name for x in rc.Dict.objects.list(max_objects=1)] == [rc.Dict.objects.list()[0].name]
    assert rc.Dict.objects.list(created_before="2000-01-01") == []
    with pytest.raises(exception.InvalidError, match="is not a Dict id"):
        rc.Dict.from_id("qu-1")
    rc.Dict.objects.delete(name)
    with pytest.raises(exception.NotFoundError):
        rc.Dict.from_id(d.object_id)
    rc.Dict.objects.delete(name, allow_missing=True)
    with pytest.raises(exception.NotFoundError):
        rc.Dict.objects.delete(name)

    with rc.Queue.ephemeral() as q:
        assert q.object_id.startswith("qu-") and q.info().name is None
        q.put(0, block=False, timeout=1, partition="p", partition_ttl=60)  # Modal's arguments, accepted
        assert q.get(partition="p") == 0
        q.put_many([1, 2], True, None, partition="p")
        other = rc.Queue.from_id(q.object_id)
        assert other.len(partition="p") == 2 and other.get_many(5, partition="p") == [1, 2] and len(other) == 0
    qname = _name("surface-q")
    rc.Queue.objects.create(qname)
    assert qname in [x.name for x in rc.Queue.objects.list()] and qname not in [x.name for x in rc.Dict.objects.list()]
    rc.Queue.objects.delete(qname)


def test_a_store_id_travels_into_a_container(app):
    @app.function()
    def write(dict_id):
        import remotecell as inner

        inner.Dict.from_id(dict_id)["key"] = "from the container"

    with rc.Dict.ephemeral() as d:
        write.remote(d.object_id)
        assert d["key"] == "from the container"


def test_parameters_make_the_constructor_and_each_set_has_its_own_containers(app):
    @app.cls()
    class Model:
        name: str = rc.parameter()
        size: int = rc.parameter(default=10)
        loud: bool = rc.parameter(default=False, init=False)

        @rc.enter()
        def load(self):
            self.loaded = f"{self.name}:{self.size}"

        @rc.method()
        def describe(self):
            return self.loaded, self.loud, os.environ.get("REMOTECELL_TASK_ID")

    small, big = Model(name="s").describe.remote(), Model(name="b", size=99).describe.remote()
    assert small[:2] == ("s:10", False) and big[:2] == ("b:99", False)
    assert small[2] != big[2]  # one pool, so one container, per set of parameters
    assert Model(name="s") is Model(name="s", size=10)  # the default filled in: the same instance
    assert Model(name="s").describe.local()[0] == "s:10"
    with pytest.raises(exception.InvalidError, match=r"Model\(\) needs the parameter name="):
        Model()
    with pytest.raises(exception.InvalidError, match=r"Model\(colour=...\): no such parameter; it has name, size"):
        Model(name="x", colour="red")
    with pytest.raises(exception.InvalidError, match=r"Model\(size=.big.\): the parameter size must be of type int"):
        Model(name="x", size="big")
    with pytest.raises(exception.InvalidError, match="annotate a parameter as str, int, bool or bytes"):
        @app.cls()
        class Bad:
            ratio: float = rc.parameter()

            @rc.method()
            def m(self):
                pass


def test_gpu_specs_as_modal_writes_them_against_an_inventory(monkeypatch, new_home):
    import remotecell._client as client_mod
    from conftest import Runtime

    state = new_home("modal-gpus")
    rt = Runtime(state, env={"REMOTECELL_FAKE_GPUS": "NVIDIA A100-SXM4-80GB,NVIDIA H100 80GB HBM3"})
    monkeypatch.setenv("REMOTECELL_HOME", str(state))
    client_mod.reset_connection()
    try:
        app = rc.App("modal-gpus")

        @app.function(gpu=["L4", "A100-80GB"])  # the first the host has, by the words of its name
        def fallback():
            return os.environ["CUDA_VISIBLE_DEVICES"]

        @app.function(gpu="H100!")
        def exact():
            return os.environ["CUDA_VISIBLE_DEVICES"]

        @app.function(gpu="A10")  # not an A100
        def other():
            return 1

        with app.run():
            assert fallback.remote() == "0" and exact.remote() == "1"
            with pytest.raises(exception.InvalidError, match=r"gpu='A10' cannot be met: this host has 0: NVIDIA "
                                                             r"A100-SXM4-80GB, 1: NVIDIA H100 80GB HBM3"):
                other.remote()
    finally:
        client_mod.reset_connection()
        rt.stop()


def test_a_cancelled_input_raises_modal_s_input_cancellation_in_the_function(app):
    from conftest import wait_for

    d = rc.Dict.from_name(_name("cancel"), create_if_missing=True)

    @app.function()
    def waits(store):
        import time

        import remotecell as inner

        try:
            # Inside the try: the test sees "started" once the runtime has it, and may cancel while this put
            # still waits for its reply; the cancellation then lands here, not before the try.
            store["started"] = True
            time.sleep(60)
        except inner.exception.InputCancellation:  # a BaseException: `except Exception` would not see it
            store["caught"] = True
            raise

    call = waits.spawn(d)
    wait_for(lambda: d.get("started"), what="the call to start")
    call.cancel()
    wait_for(lambda: d.get("caught"), what="InputCancellation inside the function")
    with pytest.raises(exception.InputCancelled):
        call.get(timeout=30)
