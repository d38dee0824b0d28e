"""rc.Dict and rc.Queue against a real runtime: values, every method, waiting gets, restarts, limits, containers."""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import remotecell as rc
import remotecell._client as client_mod
from conftest import Runtime, run_script, wait_for
from remotecell import exceptions
from remotecell_runtime.protocol import framing


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _waiters() -> int:
    return int(rc.status()["stores"]["waiters"])


def test_dict_values_both_ways_and_every_method(runtime):
    d = rc.Dict.from_name(_name("d"), create_if_missing=True)
    array = np.arange(200_000, dtype=np.float32).reshape(400, 500)  # big enough for out-of-band buffers
    d["array"] = array
    assert d.put(("run", 1), {"acc": 0.9}) is True
    assert d.put(("run", 1), "other", skip_if_exists=True) is False
    d.update({"a": 1}, b=2)
    np.testing.assert_array_equal(d["array"], array)
    assert d.get(("run", 1)) == {"acc": 0.9} and d.get("missing") is None and d.get("missing", 7) == 7
    with pytest.raises(KeyError):
        d["missing"]
    assert "a" in d and d.contains("b") and "missing" not in d
    assert len(d) == d.len() == 4
    assert list(d.keys()) == list(d) == ["array", ("run", 1), "a", "b"]  # insertion order
    assert list(d.values())[1:] == [{"acc": 0.9}, 1, 2]
    assert [k for k, _ in d.items()] == ["array", ("run", 1), "a", "b"]
    d["a"] = 10  # an update keeps its place
    assert list(d.items())[2] == ("a", 10)
    assert d.pop("a") == 10 and d.pop("a", None) is None
    with pytest.raises(KeyError):
        d.pop("a")
    del d["b"]
    assert len(d) == 2
    d.clear()
    assert len(d) == 0 and list(d.items()) == []
    # the same name is the same object, for every client
    assert rc.Dict.from_name(d.name).object_id == d.object_id


def test_dict_keys_match_by_canonical_bytes_and_unhashable_keys_are_refused(runtime):
    d = rc.Dict.from_name(_name("keys"), create_if_missing=True)
    shared = "x" * 10
    d[(shared, shared)] = "same"
    assert d[("x" * 10, "".join(["x"] * 10))] == "same"  # equal parts, not the same objects
    d[1], d[1.0], d[True] = "int", "float", "bool"  # equal in Python, three keys here (documented)
    assert (d[1], d[1.0], d[True]) == ("int", "float", "bool")
    for bad in ([1], {"a": 1}, {1}, ("ok", [1]), np.int64(3)):
        with pytest.raises(exceptions.InvalidError, match="keys must be str, int, float, bytes, bool, None"):
            d[bad] = 1


def test_many_keys_come_back_over_several_pages(runtime):
    d = rc.Dict.from_name(_name("pages"), create_if_missing=True)
    d.update({i: i * i for i in range(2500)})  # more than one page of entries (1000)
    assert dict(d.items()) == {i: i * i for i in range(2500)}


def test_queue_fifo_partitions_len_clear_iterate(runtime):
    q = rc.Queue.from_name(_name("q"), create_if_missing=True)
    q.put_many(range(5))
    q.put(np.ones(3))
    q.put("a", partition="p1")
    q.put_many(["b", "c"], partition="p1")
    assert len(q) == 6 and q.len(partition="p1") == 3 and q.len(total=True) == 9
    assert list(q.iterate(partition="p1")) == ["a", "b", "c"]  # iterate leaves them
    assert q.get() == 0 and q.get_many(3) == [1, 2, 3]
    assert q.get_many(1) == [4]
    np.testing.assert_array_equal(q.get(), np.ones(3))
    assert q.get(partition="p1") == "a"
    q.clear(partition="p1")
    assert q.len(partition="p1") == 0
    q.put_many([1, 2])
    q.put(3, partition="p2")
    q.clear(all=True)
    assert q.len(total=True) == 0
    with pytest.raises(exceptions.InvalidError, match="partition"):
        q.put(1, partition="x" * 65)


def test_get_timeout_and_non_blocking_gets(runtime):
    q = rc.Queue.from_name(_name("empty"), create_if_missing=True)
    assert q.get(block=False) is None and q.get_many(5, block=False) == []
    start = time.monotonic()
    with pytest.raises(queue.Empty, match="within 0.3 s"):
        q.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 5
    with pytest.raises(queue.Empty):
        q.get_many(2, timeout=0)
    with pytest.raises(exceptions.InvalidError, match="timeout"):
        q.get(timeout=-1)
    assert _waiters() == 0  # timed-out requests do not linger on the runtime


GETTER = """
import sys, time, remotecell as rc
q = rc.Queue.from_name(sys.argv[1])
start = time.monotonic()
try:
    print(q.get(timeout=float(sys.argv[2]) if len(sys.argv) > 2 else None), round(time.monotonic() - start, 1),
          flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def _getter(tmp_path, *args: str) -> subprocess.Popen:
    script = tmp_path / "getter.py"
    script.write_text(GETTER)
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_blocking_get_in_another_process_is_woken_by_a_put(runtime, tmp_path):
    q = rc.Queue.from_name(_name("wake"), create_if_missing=True)
    proc = _getter(tmp_path, q.name, "60")
    try:
        wait_for(lambda: _waiters() == 1, timeout_s=30, what="the other process to wait on the runtime")
        q.put({"hello": "there"})
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    value, waited_s = out.rsplit(" ", 1)
    assert value == "{'hello': 'there'}", err
    assert float(waited_s) < 30  # woken by the put, not by its timeout
    assert _waiters() == 0 and q.len() == 0


def test_a_getter_that_goes_away_takes_nothing_and_leaves_no_waiter(runtime, tmp_path):
    q = rc.Queue.from_name(_name("gone"), create_if_missing=True)
    interrupted = _getter(tmp_path, q.name)  # Ctrl-C: the client tells the runtime to stop waiting
    wait_for(lambda: _waiters() == 1, timeout_s=30, what="the getter to wait")
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.communicate(timeout=30)[0].strip() == "interrupted"
    wait_for(lambda: _waiters() == 0, what="its waiter to go")
    killed = _getter(tmp_path, q.name)  # killed: its item goes back to the queue when it cannot be delivered
    wait_for(lambda: _waiters() == 1, timeout_s=30, what="the getter to wait")
    killed.kill()
    killed.wait(10)
    q.put("kept")
    assert q.get(timeout=10) == "kept"


def test_ephemeral_objects_go_with_their_context(runtime):
    with rc.Dict.ephemeral() as d, rc.Queue.ephemeral() as q:
        d["k"] = 1
        q.put(2)
        assert d["k"] == 1 and q.get() == 2 and d.name is None
    for gone in (lambda: d.len(), lambda: q.put(1)):
        with pytest.raises(exceptions.NotFoundError, match="it was ephemeral and its context ended"):
            gone()


def test_ephemeral_objects_of_a_client_that_dies_are_deleted(tmp_path, new_home):
    state = new_home("short-sessions")
    rt = Runtime(state, env={"REMOTECELL_HEARTBEAT_TIMEOUT_S": "1"})
    try:
        script = tmp_path / "dies.py"
        script.write_text("import time, remotecell as rc\n"
                          "with rc.Dict.ephemeral() as d:\n"
                          "    d['x'] = 1\n"
                          "    print(d._oid, flush=True)\n"
                          "    time.sleep(600)\n")
        env = dict(os.environ, REMOTECELL_HOME=str(state))
        env.pop("REMOTECELL_RUNTIME", None)
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
        oid = proc.stdout.readline().strip()
        proc.kill()
        proc.wait(10)
        check = f"""
import time, remotecell as rc
from remotecell.stores import Dict
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        Dict({oid}, None, {{}}).len()
    except rc.exceptions.NotFoundError:
        print("deleted")
        break
    time.sleep(0.1)
"""
        out = run_script(check, env={"REMOTECELL_HOME": str(state)}, tmp_path=tmp_path)
        assert out.stdout.strip() == "deleted", out.stderr + rt.log_text()
        assert "deleting ephemeral store" in rt.log_text()
    finally:
        rt.stop()


def test_named_objects_survive_a_runtime_crash(tmp_path, new_home):
    state = new_home("durable-kv")
    env = {"REMOTECELL_HOME": str(state)}
    rt = Runtime(state)
    try:
        out = run_script("""
import numpy as np, remotecell as rc
d = rc.Dict.from_name("kept", create_if_missing=True)
d["array"] = np.arange(100_000)
d["small"] = "s"
q = rc.Queue.from_name("kept-q", create_if_missing=True)
q.put_many([1, 2, 3])
q.put("p", partition="p")
print(q.get())
""", env=env, tmp_path=tmp_path)
        assert out.stdout.strip() == "1", out.stderr
        rt.proc.send_signal(signal.SIGKILL)  # a crash: only what was committed is there
        rt.proc.wait(10)
        rt.log.close()
        rt = Runtime(state)
        out = run_script("""
import numpy as np, remotecell as rc
d = rc.Dict.from_name("kept")
q = rc.Queue.from_name("kept-q")
print(int(d["array"].sum()), d["small"], q.get_many(5), q.get(partition="p"), len(q))
""", env=env, tmp_path=tmp_path)
        assert out.stdout.split() == [str(sum(range(100_000))), "s", "[2,", "3]", "p", "0"], out.stderr
    finally:
        rt.stop()


def test_size_limits_are_checked_here_and_by_the_runtime(runtime):
    q = rc.Queue.from_name(_name("big"), create_if_missing=True)
    with pytest.raises(exceptions.PayloadTooLarge, match=r"Queue item of 2,097,\d+ bytes .* limit of 1,048,576 bytes"):
        q.put(b"x" * (2 << 20))
    d = rc.Dict.from_name(_name("bigkey"), create_if_missing=True)
    d["fits"] = b"x" * (2 << 20)  # Dict values may be up to 100 MiB
    assert len(d["fits"]) == 2 << 20
    # a client that skips the check: the runtime refuses, and goes on serving
    conn = client_mod.connection()
    big = framing.Payload([b"x" * (2 << 20)])
    with pytest.raises(exceptions.PayloadTooLarge, match="over this runtime's limit of 1048576 bytes"):
        conn.request({"t": "queue_put", "oid": q._oid}, [big])
    with pytest.raises(exceptions.PayloadTooLarge, match="the key of 70000 bytes is over this runtime's limit"):
        conn.request({"t": "dict_get", "oid": d._oid}, [framing.Payload([b"k" * 70_000])])
    with pytest.raises(exceptions.PayloadTooLarge, match="Dict key 'kkk.* of 70,0\\d\\d bytes pickled .* 65,536"):
        d.get("k" * 70_000)
    assert q.len() == 0 and d["fits"][:1] == b"x"


def test_malformed_kv_messages_leave_the_runtime_serving(runtime):
    conn = client_mod.connection()
    d = rc.Dict.from_name(_name("ok"), create_if_missing=True)
    q = rc.Queue.from_name(_name("okq"), create_if_missing=True)
    one = [framing.Payload([b"k"])]
    bad = [
        ({"t": "kv_open", "kind": "list", "name": "x"}, [], "kind 'list' must be 'dict' or 'queue'"),
        ({"t": "kv_open", "kind": "dict", "name": "../x"}, [], "use 1 to 128 letters"),
        ({"t": "dict_get"}, one, "a 'dict_get' message needs 'oid'"),
        ({"t": "dict_get", "oid": "1"}, one, "'dict_get' field 'oid' must be an integer, got '1'"),
        ({"t": "dict_get", "oid": q._oid}, one, "no Dict with id"),  # a Queue's id
        ({"t": "dict_get", "oid": d._oid}, [], "needs 1 payload"),
        ({"t": "dict_put", "oid": d._oid}, one, "pairs"),
        ({"t": "dict_scan", "oid": d._oid, "what": "all"}, [], "what='all' must be keys, values or items"),
        ({"t": "queue_get", "oid": q._oid, "n": 0}, [], "at least 1 item"),
        ({"t": "queue_get", "oid": q._oid, "wait_s": "soon"}, [], "'wait_s' must be a number or null"),
        ({"t": "queue_put", "oid": q._oid, "partition": 5}, one, "'partition' must be a string or null"),
        ({"t": "queue_peek", "oid": q._oid, "after": "x"}, [], "'after' must be an integer or null"),
    ]
    for header, payloads, message in bad:
        with pytest.raises(exceptions.Error, match=message):
            conn.request(dict(header), payloads)
    assert runtime.alive()
    d["still"] = "fine"
    q.put(1)
    assert d["still"] == "fine" and q.get() == 1


def test_aio_twins(runtime):
    async def main():
        d = await rc.Dict.from_name.aio(_name("aio"), create_if_missing=True)
        await d.put.aio("k", [1, 2])
        async with rc.Queue.ephemeral.aio() as q:
            getter = asyncio.ensure_future(q.get.aio(timeout=30))
            await asyncio.to_thread(wait_for, lambda: _waiters() == 1, 20, "the get to wait on the runtime")
            await q.put.aio("woken")
            return await d.get.aio("k"), [k async for k in d.keys.aio()], await getter, await q.len.aio()

    assert asyncio.run(main()) == ([1, 2], ["k"], "woken", 0)


def test_from_name_of_a_missing_object(runtime):
    with pytest.raises(exceptions.NotFoundError, match="pass create_if_missing=True"):
        rc.Queue.from_name(_name("never"))


def test_containers_use_the_same_dicts_and_queues(app, runtime):
    d = rc.Dict.from_name(_name("shared"), create_if_missing=True)
    q = rc.Queue.from_name(_name("shared-q"), create_if_missing=True)
    d["config"] = {"scale": 3}

    @app.function()
    def produce(dict_name, queue_name, xs):
        import remotecell as rc
        from remotecell import _local

        scale = rc.Dict.from_name(dict_name)["config"]["scale"]
        rc.Queue.from_name(queue_name).put_many([x * scale for x in xs])
        return _local.resolve().address

    @app.function()
    def consume(handle):  # a handle travels too: the same object on the same runtime
        return handle.get(timeout=30)

    address = produce.remote(d.name, q.name, [1, 2])
    assert address == runtime.info["endpoints"][0]  # the daemon's own socket: no second runtime
    assert q.get_many(2, timeout=10) == [3, 6]
    q.put("from the test")
    assert consume.remote(q) == "from the test"
    assert not (runtime.state_dir / "runtime.log").exists()  # nothing started a local runtime there


def test_iterate_waits_item_poll_timeout_for_new_items(runtime):
    with rc.Queue.ephemeral() as q:
        q.put(1)
        seen: list = []
        reader = threading.Thread(target=lambda: seen.extend(q.iterate(item_poll_timeout=2)))
        reader.start()
        wait_for(lambda: seen == [1] and _waiters() == 1, what="iterate to wait for a next item")
        q.put(2)
        reader.join(30)
        assert seen == [1, 2] and q.len() == 2  # iterate takes nothing
