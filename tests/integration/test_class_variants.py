"""Issue 14, item 6, against a real runtime: ``Cls.with_options`` / ``with_concurrency`` / ``with_batching`` (each
variant in containers of its own), ``@rc.batched`` on a class method, and ``update_autoscaler`` of a live pool
(ephemeral, deployed by name, a class instance)."""

from __future__ import annotations

import os
import secrets

import pytest
import remotecell as rc
from conftest import cli, wait_for
from remotecell.exceptions import FunctionTimeoutError, InvalidError


def test_with_options_runs_a_variant_in_its_own_containers_and_leaves_the_class_as_declared(app):
    @app.cls(env={"SIZE": "small"}, timeout=60)
    class Model:
        @rc.method()
        def describe(self, sleep_s=0.0):
            import time

            time.sleep(sleep_s)
            return os.environ.get("SIZE"), os.environ.get("REMOTECELL_TASK_ID")

    Big = Model.with_options(env={"SIZE": "big"}, timeout=1)
    small, big = Model().describe.remote(), Big().describe.remote()
    assert small[0] == "small" and big[0] == "big"
    assert small[1] != big[1]  # a container (a pool) of its own
    assert Model().describe.remote()[1] == small[1]  # the class's pool is still there: the variant replaced nothing
    with pytest.raises(FunctionTimeoutError, match="timeout of 1 s"):
        Big().describe.remote(3)  # the variant's timeout, not the class's 60 s
    assert Model().describe.remote(1.5)[0] == "small"
    stacked = Model.with_options(env={"SIZE": "big"}).with_options(timeout=30)
    assert stacked().describe.remote()[0] == "big"  # stacked: the first call's options stay
    assert Model.with_options(timeout=1) is Model.with_options(timeout=1)  # the same variant, one pool
    with pytest.raises(InvalidError, match=r"with_options\(schedule=...\): not an option of with_options; it takes"):
        Model.with_options(schedule=rc.Period(seconds=5))
    with pytest.raises(InvalidError, match=r"timeout=0 is out of range: allowed 1 to 86400"):
        Model.with_options(timeout=0)


def test_parameter_sets_and_variants_keep_their_pools_when_called_in_turn(app):
    @app.cls()
    class Scaled:
        factor: int = rc.parameter(default=1)

        @rc.method()
        def times(self, x):
            return self.factor * x

    one, two = Scaled(), Scaled(factor=2)
    fast = Scaled.with_options(max_containers=1)
    for x in (1, 2):  # each set's pool stays while the others are called (none retires another)
        assert (one.times.remote(x), two.times.remote(x), fast(factor=3).times.remote(x)) == (x, 2 * x, 3 * x)


def test_with_concurrency_lets_one_container_run_inputs_at_once(app):
    @app.cls(max_containers=1)
    class Meeting:
        @rc.enter()
        def setup(self):
            import threading

            self.arrived, self.cond = 0, threading.Condition()

        @rc.method()
        def meet(self, n):
            with self.cond:  # returns once n inputs are in the container at the same time (or after 10 s)
                self.arrived += 1
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.arrived >= n, timeout=10)
                return self.arrived >= n, os.environ.get("REMOTECELL_TASK_ID")

    together = Meeting.with_concurrency(max_inputs=3)()
    met = list(together.meet.map([3, 3, 3]))
    assert all(ok for ok, _ in met) and len({cid for _, cid in met}) == 1
    with pytest.raises(InvalidError, match=r"target_inputs=5 is out of range: allowed 1 to 3"):
        Meeting.with_concurrency(max_inputs=3, target_inputs=5)


def test_batched_class_method_and_with_batching_change_its_limits(app):
    @app.cls(max_containers=1)
    class Embedder:
        @rc.batched(max_batch_size=1, wait_ms=0)  # alone, as in Modal: a batched method needs no @rc.method()
        def embed(self, texts):
            return [len(texts)] * len(texts)

    assert list(Embedder().embed.map(["a", "b", "c"])) == [1, 1, 1]  # @rc.batched on a method: batches of one
    wide = Embedder.with_batching(max_batch_size=4, wait_ms=5_000)()
    assert list(wide.embed.map(["a", "b", "c", "d"])) == [4, 4, 4, 4]  # one batch: the variant's limits
    assert wide.embed.batch_stats()["max_batch_size"] == 4
    with pytest.raises(InvalidError, match=r"max_batch_size=0 is out of range: allowed 1 to 1000"):
        Embedder.with_batching(max_batch_size=0, wait_ms=1)

    @app.cls()
    class Plain:
        @rc.method()
        def f(self, x):
            return x

    with pytest.raises(InvalidError, match=r"Plain.with_batching\(...\): \S*Plain has no @rc.batched method"):
        Plain.with_batching(max_batch_size=4, wait_ms=10)


def _runners(f) -> int:
    return f.get_current_stats().num_total_runners


def test_update_autoscaler_changes_a_live_pool_at_once(app):
    @app.function(scaledown_window=600)
    def warm():
        return os.environ.get("REMOTECELL_TASK_ID")

    settings = warm.update_autoscaler(min_containers=2)
    assert (settings.min_containers, settings.max_containers, settings.scaledown_window) == (2, 100, 600)
    wait_for(lambda: _runners(warm) == 2, timeout_s=30, what="two warm containers after min_containers=2")
    settings = warm.update_autoscaler(min_containers=0, scaledown_window=2)
    assert (settings.min_containers, settings.scaledown_window) == (0, 2)  # the rest as they were
    wait_for(lambda: _runners(warm) == 0, timeout_s=30, what="the containers to go after min_containers=0")
    with pytest.raises(InvalidError, match=r"min_containers=5 is more than max_containers=3"):
        warm.update_autoscaler(min_containers=5, max_containers=3)
    with pytest.raises(InvalidError, match=r"warm.update_autoscaler: max_containers=0 is out of range: allowed 1 to"):
        warm.update_autoscaler(max_containers=0)

    @app.cls()
    class Model:
        @rc.method()
        def f(self):
            return 1

    assert Model().update_autoscaler(buffer_containers=1).buffer_containers == 1


DEPLOYED = """
import os
import remotecell as rc
app = rc.App({name!r})

@app.function()
def f():
    return 1

@app.cls(env={{"SIZE": "small"}})
class Model:
    @rc.method()
    def describe(self):
        return os.environ.get("SIZE"), os.environ.get("REMOTECELL_TASK_ID")
"""


@pytest.fixture
def deployed(runtime, tmp_path):
    """(the name, the file) of an app deployed by `remotecell deploy`; stopped at the end."""
    name = f"variants-{secrets.token_hex(3)}"
    path = tmp_path / "deployed_variants.py"
    path.write_text(DEPLOYED.format(name=name))
    done = cli("deploy", str(path))
    assert done.returncode == 0, done.stderr
    yield name, path
    rc.App.stop_deployed(name)


def test_update_autoscaler_of_a_deployed_function_found_by_name(deployed):
    name, path = deployed
    f = rc.Function.from_name(name, "f")
    assert _runners(f) == 0
    assert f.update_autoscaler(min_containers=1).min_containers == 1
    wait_for(lambda: _runners(f) == 1, timeout_s=30, what="a warm container of the deployed function")
    model = rc.Cls.from_name(name, "Model")()
    assert model.update_autoscaler(max_containers=2).max_containers == 2
    assert cli("deploy", str(path)).returncode == 0  # a redeploy resets it to the decorator's values
    assert f.update_autoscaler().min_containers == 0


def test_with_options_of_a_deployed_class_found_by_name(deployed):
    name, _ = deployed
    Model = rc.Cls.from_name(name, "Model")
    Big = Model.with_options(env={"SIZE": "big"}, max_containers=1)
    small, big = Model().describe.remote(), Big().describe.remote()
    assert small[0] == "small" and big[0] == "big" and small[1] != big[1]  # its own pool, made by the runtime
    again = rc.Cls.from_name(name, "Model").with_options(env={"SIZE": "big"}, max_containers=1)
    assert again().describe.remote() == big  # the same variant from another handle: the same pool
    assert Model().describe.remote()[0] == "small"
    with pytest.raises(InvalidError, match=r"gpu=5 must be a string like 'any'"):
        Model.with_options(gpu=5)
