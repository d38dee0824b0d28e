"""Spare containers: started with the runtime, given to a function's first container, replaced, ended with it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import remotecell as rc
from conftest import host_pid, own_runtime, wait_for


def _spares() -> list[int]:
    return list(rc.status()["spares"])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] == "Z"  # a zombie is as good as gone: it runs nothing
    except FileNotFoundError:
        return True


def _only_container(fn: rc.Function) -> int:
    stats = fn.stats()
    (cid,) = stats["placements"]
    return host_pid(stats, cid)


def test_the_first_container_is_the_spare_with_its_own_variables_and_a_new_spare_replaces_it(new_home):
    with own_runtime(new_home("spares")) as rt:
        (spare,) = wait_for(_spares, what="a spare container")
        app = rc.App("spare-use")

        @app.function(secrets=[rc.Secret.from_dict({"SPARE_GREETING": "hello"})])
        def seen() -> dict[str, str | None]:
            return {k: os.environ.get(k) for k in ("SPARE_GREETING", "REMOTECELL_TASK_ID", "HOME")}

        with app.run():
            got = seen.remote()
            assert _only_container(seen) == spare
            cid = next(iter(seen.stats()["placements"]))
            assert got == {"SPARE_GREETING": "hello", "REMOTECELL_TASK_ID": cid, "HOME": got["HOME"]}
            (fresh,) = wait_for(lambda: [p for p in _spares() if p != spare], what="a new spare")
        rt.stop()
        wait_for(lambda: _gone(fresh), what=f"spare {fresh} to end with its runtime")


def test_a_function_that_needs_other_interpreter_start_variables_gets_a_new_process(new_home):
    with own_runtime(new_home("spares-env")):
        (spare,) = wait_for(_spares, what="a spare container")
        app = rc.App("spare-env")

        @app.function(secrets=[rc.Secret.from_dict({"PYTHONHASHSEED": "0"})])
        def hashing() -> int:
            return sys.flags.hash_randomization

        with app.run():
            assert hashing.remote() == 0  # read when the interpreter started: a spare could not have it
            assert _only_container(hashing) != spare
            assert _spares() == [spare]  # still there for the next function


def test_no_spares_when_turned_off_and_a_bad_count_is_named_in_the_log(new_home):
    with own_runtime(new_home("spares-off"), env={"REMOTECELL_SPARE_CONTAINERS": "0"}):
        app = rc.App("spare-off")

        @app.function()
        def one() -> int:
            return 1

        with app.run():
            assert one.remote() == 1
            assert _spares() == []
    with own_runtime(new_home("spares-bad"), env={"REMOTECELL_SPARE_CONTAINERS": "many"}) as rt:
        wait_for(_spares, what="the default spare")
        assert "REMOTECELL_SPARE_CONTAINERS='many' is not a whole number from 0 to 8" in rt.log_text()


def test_a_spare_not_used_by_a_volume_function_in_a_sandbox(sandboxed, tmp_path: Path):
    (spare,) = wait_for(_spares, what="a spare container")
    app = rc.App("spare-volume")
    vol = rc.Volume.from_name("spare-vol", create_if_missing=True)

    @app.function(volumes={"/data": vol})
    def write() -> bool:
        Path("/data/x").write_text("1")
        return True

    with app.run():
        assert write.remote()
        assert _only_container(write) != spare  # its mounts are bwrap's: a spare's sandbox has none


def test_spares_closed_while_they_start_end_without_an_error(tmp_path: Path):
    """``close`` between a sandboxed spare's start and its pid: the start ends quietly, the process is reaped."""
    import asyncio

    from remotecell_runtime.backends.spares import Spares, find_sandbox

    async def scenario() -> list[BaseException | None]:
        (tmp_path / "sock").mkdir()
        sandbox, why = find_sandbox(str(tmp_path / "sock"), tmp_path, ())
        assert sandbox is not None, why
        spares = Spares(sandbox, 2, why)
        spares.fill()
        tasks = list(spares.tasks)
        await spares.spawned_one.wait()  # one process exists; neither pid has come back through its sandbox
        procs = [s.proc for s in spares.spawned]
        spares.close()
        await spares.wait_closed()
        assert all(p.returncode is not None for p in procs), "a killed spare was left unreaped"
        assert spares.ready == [] and spares.spawned == []
        return [t.exception() for t in tasks]

    assert asyncio.run(scenario()) == [None, None]
