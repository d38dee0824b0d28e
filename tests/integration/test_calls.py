"""Remote calls against a real runtime: values, errors, output, big buffers, .aio, timeouts, crashes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time

import numpy as np
import pytest
import torch
from conftest import run_script
from remotecell import exceptions


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class BrokenOnUnpickle(Exception):
    """Pickles fine remotely, but its __init__ needs two arguments, so it cannot be rebuilt."""

    def __init__(self, a, b):
        super().__init__(f"broken {a} {b}")


def test_values_both_ways(app):
    @app.function()
    def echo(*args, **kwargs):
        return args, kwargs

    value = {"list": [1, 2.5, None], "nested": {"t": (1, "a")}, "bytes": b"\x00\x01", "set": {3}}
    args, kwargs = echo.remote(value, Point(1, 2), key=Point(3, 4))
    assert args == (value, Point(1, 2))
    assert kwargs == {"key": Point(3, 4)}
    assert echo.local(1) == ((1,), {})


def test_exceptions_travel_as_values_both_ways(app):
    @app.function()
    def wrap(err):
        return RuntimeError(f"wrapped {type(err).__name__}: {err}"), err

    outer, inner = wrap.remote(KeyError("k"))
    assert isinstance(outer, RuntimeError) and str(outer) == "wrapped KeyError: 'k'"
    assert isinstance(inner, KeyError) and inner.args == ("k",)


def test_remote_exception_is_reraised_with_remote_traceback(app):
    @app.function()
    def fail(n):
        def inner():
            raise ValueError(f"bad value {n}")
        inner()

    with pytest.raises(ValueError, match="bad value 7") as info:
        fail.remote(7)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "inner" in notes


def test_exception_that_cannot_be_rebuilt_becomes_remote_error(app):
    @app.function()
    def fail():
        raise BrokenOnUnpickle(1, 2)

    with pytest.raises(exceptions.RemoteError) as info:
        fail.remote()
    err = info.value
    assert err.type_name.endswith("BrokenOnUnpickle")
    assert "broken 1 2" in err.message
    assert "raise BrokenOnUnpickle" in err.traceback
    assert "Remote traceback" in str(err)


def test_exception_class_defined_in_main(runtime, tmp_path):
    result = run_script(
        """
import remotecell as rc
app = rc.App("main-exc")

class MyError(Exception):
    pass

@app.function()
def fail():
    raise MyError("from main")

try:
    fail.remote()
except MyError as e:
    print("caught", type(e) is MyError, e)
""", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "caught True from main" in result.stdout


def test_unpicklable_return_value_names_its_type(app):
    @app.function()
    def make_lock():
        return threading.Lock()

    with pytest.raises(exceptions.SerializationError, match="_thread.lock"):
        make_lock.remote()


def test_output_streams_before_the_call_returns(app, tmp_path, monkeypatch):
    flag = tmp_path / "seen"

    @app.function()
    def talk(flag_path):
        import sys
        print("line one")
        print("to stderr", file=sys.stderr)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until the caller has seen our output
            if os.path.exists(flag_path):
                return "streamed"
            time.sleep(0.01)
        return "not streamed"

    seen: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def write(self, text):
            seen.append((self.name, text))
            if "to stderr" in text:
                flag.touch()
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", Recorder("stdout"))
    monkeypatch.setattr("sys.stderr", Recorder("stderr"))
    assert talk.remote(str(flag)) == "streamed"
    assert seen[0] == ("stdout", "line one\n")
    assert ("stderr", "to stderr\n") in seen


def test_100mb_array_round_trip(app):
    @app.function()
    def identity(x):
        return x

    a = np.random.default_rng(0).random(25_000_000, dtype=np.float32)
    b = identity.remote(a)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.array_equal(a, b)
    b[0] = 42.0  # arrives writable, as a normal array
    assert identity.remote(b)[0] == 42.0


def test_tensor_round_trip(app):
    @app.function()
    def double(t):
        return t * 2, t.dtype, t.requires_grad

    t = torch.arange(2_000_000, dtype=torch.float32).reshape(1000, 2000)
    out, dtype, grad = double.remote(t)
    assert isinstance(out, torch.Tensor) and torch.equal(out, t * 2)
    assert dtype == torch.float32 and grad is False
    bf = torch.ones(300_000, dtype=torch.bfloat16, requires_grad=True)
    out, dtype, grad = double.remote(bf)
    assert dtype == torch.bfloat16 and grad is True
    assert torch.equal(out.detach(), (bf * 2).detach())


def test_aio_inside_a_running_event_loop(app):
    @app.function()
    def square(x):
        return x * x

    async def main():
        assert asyncio.get_running_loop().is_running()
        one = await square.remote.aio(3)
        many = await asyncio.gather(*(square.remote.aio(i) for i in range(20)))
        return one, many

    one, many = asyncio.run(main())
    assert one == 9
    assert many == [i * i for i in range(20)]


def test_blocking_call_from_inside_a_running_loop(app):
    """A notebook cell calls .remote() while the kernel's loop runs in the same thread."""

    @app.function()
    def inc(x):
        return x + 1

    async def cell():
        return inc.remote(1), inc.stats()  # stats() runs its coroutine through the bridge's loop thread

    value, stats = asyncio.run(cell())
    assert value == 2 and stats["function"].endswith("inc")


def test_timeout_replaces_the_container(app):
    @app.function(timeout=1)
    def slow(seconds):
        time.sleep(seconds)
        return os.environ["REMOTECELL_TASK_ID"]

    start = time.monotonic()
    with pytest.raises(exceptions.FunctionTimeoutError, match="timeout of 1 s") as timed_out:
        slow.remote(30)
    assert time.monotonic() - start < 10
    stopped = re.search(r"container (\S+) was stopped", str(timed_out.value)).group(1)
    assert slow.remote(0) != stopped  # a new container


def test_sigkill_under_a_call_gives_container_crashed(app):
    @app.function()
    def die(how):
        print("about to die")
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)

    with pytest.raises(exceptions.ContainerCrashed, match="SIGKILL") as info:
        die.remote("kill")
    assert "about to die" in str(info.value)
    with pytest.raises(exceptions.ContainerCrashed, match="exited with code 3"):
        die.remote("exit")

    @app.function()
    def fine():
        return "ok"

    assert fine.remote() == "ok"


def test_redefinition_ships_the_new_body(app):
    @app.function(name="versioned")
    def v():
        return 1

    assert v.remote() == 1

    @app.function(name="versioned")
    def v():
        return 2

    assert v.remote() == 2


def test_calls_from_many_threads(app):
    @app.function(max_containers=2)
    def ident(x):
        return x

    results: dict[int, int] = {}

    def worker(i):
        results[i] = ident.remote(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: i for i in range(8)}


def test_function_is_not_directly_callable(app):
    @app.function()
    def f():
        return 1

    with pytest.raises(exceptions.InvalidError, match=r"f.remote\(...\)"):
        f()


def test_implicit_app_lives_with_the_process(runtime, tmp_path):
    result = run_script(
        """
import remotecell as rc
app = rc.App("implicit")

@app.function()
def f(x):
    return x * 10

print(f.remote(1), f.remote(2))
""", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10 20"
