"""The result cache's store (real SQLite): keys, the size cap, LRU eviction, clearing, the cap's variable."""

from __future__ import annotations

import pytest
from remotecell.options import code_digest
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.options import FunctionOptions
from remotecell_runtime.result_cache import DEFAULT_MAX_MB, ResultCache, cache_key, max_bytes_from_env


def _opts(code: str = "c1", image: dict | None = None) -> FunctionOptions:
    wire = {"cache": {"code": code}}
    if image is not None:
        wire["image"] = image
    return FunctionOptions.from_wire(wire)


def test_keys_differ_by_code_method_and_arguments_and_shared_memory_has_none():
    args = Payload([b"pickled-args"])
    key = cache_key(_opts(), None, args)
    assert key == cache_key(_opts(), None, Payload([b"pickled-args"]))
    assert len({key, cache_key(_opts("c2"), None, args), cache_key(_opts(), "m", args),
                cache_key(_opts(), None, Payload([b"other"]))}) == 4
    assert cache_key(_opts(), None, Payload([b"x"], shm=[[0, "seg", 10]])) is None
    assert cache_key(FunctionOptions.from_wire({}), None, args) is None


def test_the_least_recently_used_go_first_past_the_cap(tmp_path):
    cache = ResultCache(tmp_path / "cache.db", max_bytes=2500)
    for key in ("a", "b"):
        assert cache.put(key, "code", Payload([bytes(1000)]))
    assert cache.get("a") is not None  # a is used again: b is now the oldest
    assert cache.put("c", "code", Payload([bytes(1000)]))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert not cache.put("huge", "code", Payload([bytes(5000)]))  # larger than the whole cache
    assert cache.stats()["entries"] == 2 and cache.stats()["bytes"] <= 2500
    assert bytes(cache.get("c").frames[0]) == bytes(1000)


def test_a_result_past_the_entry_limit_is_not_kept_so_the_loop_never_reads_a_large_one(tmp_path):
    cache = ResultCache(tmp_path / "cache.db", max_bytes=1 << 30, entry_max_bytes=10_000)
    assert cache.put("small", "code", Payload([bytes(9_000)]))
    assert not cache.put("large", "code", Payload([bytes(20_000)]))
    assert cache.get("large") is None and cache.stats()["entries"] == 1
    from remotecell_runtime.result_cache import ENTRY_MAX_BYTES
    assert ENTRY_MAX_BYTES == 4 << 20


def test_clear_drops_one_functions_entries_and_they_survive_a_reopen(tmp_path):
    cache = ResultCache(tmp_path / "cache.db", max_bytes=1 << 20)
    cache.put("k1", "f", Payload([b"1"]))
    cache.put("k2", "g", Payload([b"2"]))
    cache.close()
    cache = ResultCache(tmp_path / "cache.db", max_bytes=1 << 20)
    assert cache.clear("f") == 1 and cache.clear("f") == 0
    assert cache.get("k1") is None and bytes(cache.get("k2").frames[0]) == b"2"


def test_the_cap_comes_from_its_variable_and_a_bad_one_is_named():
    assert max_bytes_from_env({}) == DEFAULT_MAX_MB << 20
    assert max_bytes_from_env({"REMOTECELL_CACHE_MAX_MB": "1.5"}) == 3 << 19
    for bad in ("0", "-3", "lots"):
        with pytest.raises(ValueError, match=f"REMOTECELL_CACHE_MAX_MB='{bad}': give the result cache's size cap"):
            max_bytes_from_env({"REMOTECELL_CACHE_MAX_MB": bad})


def test_a_changed_body_changes_the_code_digest():
    def f(x):
        return x

    first = code_digest(f)

    def f(x):  # the same name, another body
        return x + 1

    assert code_digest(f) != first
    assert code_digest(f) == code_digest(f)
