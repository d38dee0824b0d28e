"""The protocol package shared by both sides: framing round trips, malformed messages, the error registry.

No runtime: these run in milliseconds.
"""

from __future__ import annotations

import ast
import gc
import json
import os
from pathlib import Path

import pytest
from remotecell import exceptions
from remotecell_runtime.protocol import framing, ids, pickling, sharedmem
from remotecell_runtime.protocol.errors import ErrorName
from remotecell_runtime.protocol.framing import Payload, WireError

PROTOCOL_DIR = Path(framing.__file__).parent


def test_every_runtime_error_name_is_an_exception_class_of_the_client():
    for name in ErrorName:
        cls = exceptions.BY_NAME[name.value]
        assert cls.__name__ == name.value and issubclass(cls, exceptions.Error)
    assert set(exceptions.BY_NAME) == {n.value for n in ErrorName}


def test_an_error_name_travels_as_its_plain_name():
    frames = framing.encode({"t": "error", "error": {"type": ErrorName.NOT_FOUND, "message": "m"}})
    assert json.loads(bytes(frames[1]))["error"]["type"] == "NotFoundError"
    assert f"{ErrorName.TIMEOUT}" == "FunctionTimeoutError"


def test_the_protocol_package_imports_nothing_outside_itself():
    for path in PROTOCOL_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith(("remotecell", "remotecell_runtime")), (path, node.module)
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                pytest.fail(f"{path.name} imports from outside protocol/: {'.' * node.level}{node.module}")
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("remotecell") for a in node.names), (path, node.names)


def test_header_and_payloads_round_trip_packed_and_unpacked():
    small = [pickling.serialize(i) for i in range(3)]
    big = Payload([b"x" * (framing.PACK_MAX_BYTES + 1)])
    header, payloads = framing.decode(framing.encode({"t": "calls", "fid": "f"}, [*small, big]))
    assert header["t"] == "calls" and header["pk"] == 1
    assert [pickling.deserialize(p) for p in payloads[:3]] == [0, 1, 2]
    assert bytes(framing.buffer_of(payloads[3].frames[0])) == b"x" * (framing.PACK_MAX_BYTES + 1)


def test_an_inline_message_is_one_frame_with_its_small_payloads_and_decodes_as_a_classic_one():
    header = {"t": "result", "id": "a-1", "status": "ok"}
    small, big = pickling.serialize("value"), Payload([b"x" * (framing.PACK_MAX_BYTES + 1)])
    (frame,) = framing.encode(dict(header), [small], inline=True)
    assert frame.startswith(framing.PROTOCOL + b"{")
    decoded, payloads = framing.decode([frame])
    assert decoded == dict(header, p=[len(small.frames[0])], pk=1) and pickling.deserialize(payloads[0]) == "value"
    frames = framing.encode(dict(header), [small, big], inline=True)
    assert len(frames) == 2
    _, payloads = framing.decode(frames)
    assert pickling.deserialize(payloads[0]) == "value" and bytes(payloads[1].frames[0]) == big.frames[0]
    assert framing.decode(framing.encode({"t": "revoked", "id": "a-2"}, inline=True)) == ({"t": "revoked",
                                                                                          "id": "a-2"}, [])


def test_a_header_decodes_as_json_compact_or_not():
    header = {"t": "call", "id": "é-1", "n": [1, 2.5, None, True], "e": {"x": -3}}
    assert framing.decode_header(framing.encode(dict(header))) == header
    assert framing.decode_header([framing.PROTOCOL, b' {\n "t": "call", "n": [1, 2.5] }\n']) == {"t": "call",
                                                                                               "n": [1, 2.5]}


def test_many_inputs_in_one_message_split_back_per_entry():
    entries = [({"id": "a"}, [pickling.serialize("one")]), ({"id": "b", "np": 2}, [pickling.serialize(2),
                                                                                  pickling.serialize(3)])]
    header, payloads = framing.decode(framing.encode_many("calls", entries, fid="f"))
    split = framing.split_many(header, payloads)
    assert [e["id"] for e, _ in split] == ["a", "b"]
    assert [[pickling.deserialize(p) for p in ps] for _, ps in split] == [["one"], [2, 3]]


@pytest.mark.parametrize(("frames", "says"), [
    ([framing.PROTOCOL], "at least 2 frames"),
    ([b"rc/9", b"{}"], "protocol b'rc/9' is not supported"),
    ([b"GET /", b"{}"], "not a remotecell message"),
    ([framing.PROTOCOL, b"{nope"], "header is not JSON"),
    ([framing.PROTOCOL, b'{"t": "call"} {}'], "header is not JSON: Extra data"),
    ([framing.PROTOCOL, b""], "header is not JSON"),
    ([framing.PROTOCOL, b'["t"]'], "must be a JSON object"),
    ([framing.PROTOCOL, b'{"t": "call", "p": [{"n": 2}]}', b"x"], "does not match the 1 frames"),
    ([framing.PROTOCOL, b'{"t": "call"}', b"x"], "not described by the header"),
    ([framing.PROTOCOL, b'{"t": "call", "p": [{"n": 2, "shm": [[1, "../etc/passwd", 4]]}]}', b"x", b""],
     "shared-memory list"),
    ([framing.PROTOCOL + b'{"t": "call", "p": [3]}\nabc'], "does not announce"),
    ([framing.PROTOCOL + b'{"t": "call", "p": [9], "pk": 1}\nabc'], "does not fit the pack frame"),
    ([framing.PROTOCOL + b'{"t": "call", "p": [3.0], "pk": 1}\nabc'], "payload description 3.0 does not match"),
    ([framing.PROTOCOL + b'{"t": "call", "p": [2], "pk": 1}\nabc'], "not described by the header"),
    ([framing.PROTOCOL + b'{"t": "call"'], "header is not JSON"),
    ([b"rc/9{}"], "protocol b'rc/9' is not supported"),
])
def test_a_malformed_message_raises_wire_error_saying_what_is_wrong(frames, says):
    with pytest.raises(WireError) as info:
        framing.decode(frames)
    assert says in str(info.value)


def test_call_ids_are_unique_and_in_the_order_they_were_made():
    made = [ids.new_call_id() for _ in range(1000)]
    assert len(set(made)) == len(made) and all(i.startswith("fc-") for i in made)
    assert sorted(made, key=lambda i: i[:16]) == made  # the time part: the job store's index grows at its end
    assert ids.new_call_id("fg").startswith("fg-")


def test_a_segment_name_cannot_leave_the_shared_memory_folder():
    assert framing.segment_name_ok("rc-1234-5")
    for bad in ("../rc-1", "rc-a/b", "other", "rc-" + "x" * 200):
        assert not framing.segment_name_ok(bad)


def test_a_kept_segment_is_renamed_as_its_holders_and_reused():
    theirs = sharedmem.ShmPool(prefix=f"rc-test{os.getpid()}-theirs")  # a container of some runtime
    mine = sharedmem.ShmPool(prefix=f"rc-test{os.getpid()}-mine")
    data = memoryview(bytearray(b"x" * 4096))
    got = theirs.put(data)
    view = mine.take(got, 4096)
    del view  # idle here now, kept for my next send: under my name
    gc.collect()
    assert sharedmem.sweep_segments(theirs.prefix) == 0  # its sender's sweep leaves what I hold
    sent = mine.put(data)
    assert sent != got and sent.startswith(f"{mine.prefix}-{os.getpid()}-")
    assert not os.path.exists(f"/dev/shm/{got}")  # the same segment, renamed: reused, not copied anew
    sharedmem.discard([Payload([], shm=[[0, sent, 4096]])])


def test_a_segment_swept_while_mapped_is_not_kept():
    theirs = sharedmem.ShmPool(prefix=f"rc-test{os.getpid()}-theirs")
    mine = sharedmem.ShmPool(prefix=f"rc-test{os.getpid()}-mine")
    data = memoryview(bytearray(b"x" * 4096))
    got = theirs.put(data)
    view = mine.take(got, 4096)
    assert sharedmem.sweep_segments(theirs.prefix) == 1  # its runtime stopped and swept it: the mapping stays
    assert bytes(view[:4]) == b"xxxx"
    del view
    gc.collect()
    assert not mine._idle  # nothing to keep: its name was gone
    sent = mine.put(data)
    assert sent.startswith(mine.prefix)
    sharedmem.discard([Payload([], shm=[[0, sent, 4096]])])
