"""``@app.function(cache=True)``: the runtime's result cache, against a real runtime and real containers.

A counter in a Dict (incremented by each run) proves whether a call ran.
"""

from __future__ import annotations

import uuid

import pytest
import remotecell as rc
from conftest import Runtime, run_script
from remotecell.exceptions import InvalidError


@pytest.fixture
def runs():
    """A fresh Dict that the test's functions count their runs in."""
    name = f"cache-runs-{uuid.uuid4().hex[:8]}"
    d = rc.Dict.from_name(name, create_if_missing=True)
    yield name, d
    rc.Dict.objects.delete(name)


def _counted(app, runs_name: str, **options):
    @app.function(cache=True, **options)
    def cached_square(x):
        import remotecell as rc

        d = rc.Dict.from_name(runs_name)
        d[x] = d.get(x, 0) + 1
        return x * x

    return cached_square


def test_an_equal_call_is_answered_from_the_cache_without_running(app, runs):
    name, d = runs
    f = _counted(app, name)
    f.cache_clear()
    assert f.remote(3) == 9
    assert f.remote(3) == 9  # from the cache
    assert f.remote(4) == 16  # other arguments: it runs
    assert d[3] == 1 and d[4] == 1
    assert list(f.map([3, 4, 5])) == [9, 16, 25]  # a map: only 5 runs
    assert d[3] == 1 and d[4] == 1 and d[5] == 1
    call = f.spawn(5)
    assert call.get(timeout=60) == 25 and d[5] == 1  # a spawn too
    assert rc.status()["cache"]["hits"] >= 4


def test_a_changed_body_misses_and_cache_clear_forgets(app, runs):
    name, d = runs
    f = _counted(app, name)
    f.cache_clear()
    assert f.remote(7) == 49 and f.remote(7) == 49
    assert d[7] == 1

    @app.function(cache=True, name="cached_square")
    def changed(x):  # the same name, another body: its own entries
        import remotecell as rc

        d = rc.Dict.from_name(name)
        d[x] = d.get(x, 0) + 10
        return -x

    assert changed.remote(7) == -7
    assert d[7] == 11
    assert f.cache_clear() >= 1
    assert f.cache_clear() == 0
    g = _counted(app, name)
    assert g.remote(7) == 49  # cleared: it runs again
    assert d[7] == 12


def test_errors_are_not_cached(app, runs):
    name, d = runs

    @app.function(cache=True)
    def fails_first(x):
        import remotecell as rc

        d = rc.Dict.from_name(name)
        d[x] = d.get(x, 0) + 1
        if d[x] == 1:
            raise ValueError("first run fails")
        return x

    fails_first.cache_clear()
    with pytest.raises(ValueError, match="first run fails"):
        fails_first.remote(1)
    assert fails_first.remote(1) == 1 and fails_first.remote(1) == 1
    assert d[1] == 2


def test_cache_is_refused_where_a_function_has_effects(app):
    with pytest.raises(InvalidError, match="cache=True cannot go with schedule="):
        app.function(cache=True, schedule=rc.Period(hours=1))(lambda: None)
    with pytest.raises(InvalidError, match="cache='yes' must be True or False"):
        app.function(cache="yes")(lambda: None)

    def gen():
        yield 1

    with pytest.raises(InvalidError, match="gen is a generator"):
        app.function(cache=True)(gen)
    with pytest.raises(InvalidError, match="@app.cls takes no cache="):
        app.cls(cache=True)

    @app.function()
    def plain():
        return 1

    with pytest.raises(InvalidError, match="plain has no result cache"):
        plain.cache_clear()


def test_the_least_recently_used_results_go_past_the_cap(new_home, tmp_path):
    """A runtime with a 1 MiB cache: three results of ~400 KB; the one used least recently goes."""
    state = new_home("small-cache")
    rt = Runtime(state, env={"REMOTECELL_CACHE_MAX_MB": "1"})
    try:  # the script talks to this runtime; the test's own client stays on the session's
        script = run_script("""
import remotecell as rc
app = rc.App("evict")
runs = rc.Dict.from_name("evict-runs", create_if_missing=True)

@app.function(cache=True)
def big(x):
    import remotecell as rc
    d = rc.Dict.from_name("evict-runs")
    d[x] = d.get(x, 0) + 1
    return bytes([x]) * 400_000

with app.run():
    big.remote(1); big.remote(2)
    big.remote(1)            # 1 used again: 2 is now the least recently used
    big.remote(3)            # past the cap: 2 goes
    big.remote(1); big.remote(3)
    big.remote(2)            # runs again
    print("runs", runs[1], runs[2], runs[3])
    print("cache", rc.status()["cache"]["entries"], rc.status()["cache"]["bytes"] <= 1 << 20)
""", env={"REMOTECELL_HOME": str(state)}, tmp_path=tmp_path, timeout_s=120)
        assert script.returncode == 0, script.stderr
        assert "runs 1 2 1" in script.stdout
        assert "cache 2 True" in script.stdout
    finally:
        rt.stop()


def test_a_script_with_output_enabled_says_a_result_came_from_the_cache(runtime, tmp_path):
    script = run_script("""
import remotecell as rc
app = rc.App("cache-note")

@app.function(cache=True)
def noted(x):
    return x + 1

with rc.enable_output(), app.run():
    noted.cache_clear()
    print(noted.remote(1), noted.remote(1))
    print(list(noted.map([1, 2, 1])))
""", tmp_path=tmp_path, timeout_s=120)
    assert script.returncode == 0, script.stderr
    assert "2 2" in script.stdout and "[2, 3, 2]" in script.stdout
    assert script.stderr.count("remotecell: noted: result from the cache (it did not run)") == 1
    assert "remotecell: noted.map: 2 results from the cache (not run again)" in script.stderr


def test_a_spawn_handles_view_says_its_result_came_from_the_cache(app, runs):
    from remotecell.widgets.calls import CallWatch

    name, d = runs
    f = _counted(app, name)
    f.cache_clear()
    first = f.spawn(6)
    assert first.get(timeout=60) == 36
    again = f.spawn(6)
    assert again.get(timeout=60) == 36 and d[6] == 1
    ran, cached = CallWatch(first).refresh(), CallWatch(again).refresh()
    assert "  result: 36" in ran.text() and not ran.from_cache
    assert "  result (from the cache): 36" in cached.text() and cached.from_cache


def test_a_deployed_cached_function_found_by_name_shares_the_cache(runtime, runs, tmp_path):
    from conftest import cli

    name, d = runs
    path = tmp_path / "cached_deploy.py"
    path.write_text(f"""
import remotecell as rc
app = rc.App("cached-deploy")

@app.function(cache=True)
def slow_double(x):
    d = rc.Dict.from_name({name!r})
    d[x] = d.get(x, 0) + 1
    return 2 * x
""")
    done = cli("deploy", str(path))
    assert done.returncode == 0, done.stderr
    try:
        f = rc.Function.from_name("cached-deploy", "slow_double")
        f.cache_clear()
        assert f.remote(21) == 42 and f.remote(21) == 42 and list(f.map([21, 1])) == [42, 2]
        assert d[21] == 1 and d[1] == 1
        assert f.cache_clear() == 2
        assert f.remote(21) == 42 and d[21] == 2
    finally:
        rc.App.stop_deployed("cached-deploy")
