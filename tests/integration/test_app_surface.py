"""Issue 14, item 5, against a real runtime: ``App.lookup(name, create_if_missing=)``, ``app.include(other)`` and
schedules that fire in an ephemeral ``app.run()`` (and stop with it)."""

from __future__ import annotations

import secrets

import pytest
import remotecell as rc
from conftest import wait_for
from remotecell.exceptions import InvalidError, NotFoundError


def test_app_lookup_finds_a_deployed_app_and_creates_one_if_asked(runtime):
    name = f"looked-up-{secrets.token_hex(3)}"
    with pytest.raises(NotFoundError, match=rf"no deployed app named '{name}' on this runtime .*create_if_missing"):
        rc.App.lookup(name)
    app = rc.App.lookup(name, create_if_missing=True)
    try:
        assert app.app_id and name in [a["name"] for a in rc.App.list_deployed()]
        again = rc.App.lookup(name)
        assert again.app_id == app.app_id
        sandbox = rc.Sandbox.create("echo", "from a looked-up app", app=again, timeout=60)  # Modal's use of it
        sandbox.wait()
        assert sandbox.stdout.read() == "from a looked-up app\n"
    finally:
        rc.App.stop_deployed(name)


def test_include_makes_the_other_apps_functions_and_classes_this_apps(runtime):
    other = rc.App("other")

    @other.function(name="double")
    def double(x):
        return 2 * x

    @other.cls()
    class Adder:
        @rc.method()
        def add(self, a, b):
            return a + b

    main = rc.App("main")

    @main.function()
    def quadruple(x):
        return 4 * x

    assert main.include(other) is main and len(main.functions) == 3
    with main.run():
        assert (quadruple.remote(3), double.remote(4), Adder().add.remote(1, 2)) == (12, 8, 3)
        assert double.app is main and other.app_id is None  # one app, main, runs all three
    clash = rc.App("clash")

    @clash.function(name="double")
    def not_double(x):
        return x

    with pytest.raises(InvalidError, match=r"app.include\('clash'\): both apps define double; rename one"):
        main.include(clash)


def test_schedules_fire_in_an_ephemeral_app_run_and_stop_with_it(runtime):
    app = rc.App("ticking")
    seen = rc.Dict.from_name(f"ticks-{secrets.token_hex(3)}", create_if_missing=True)

    @app.function(schedule=rc.Period(seconds=1))
    def tick():
        import time

        seen[str(time.time())] = 1

    with app.run():
        app_id = app.app_id
        assert [s.app_name for s in rc.schedules.list_schedules()].count(app_id) == 1
        wait_for(lambda: seen.len() >= 2, timeout_s=30, what="two scheduled runs in app.run()")
    assert app_id not in [s.app_name for s in rc.schedules.list_schedules()]  # gone with the app
