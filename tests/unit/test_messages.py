"""Typed messages: each class reads its own header back, checks every field, and keeps the wire compact.

No runtime: these run in milliseconds.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from remotecell_runtime.protocol import framing
from remotecell_runtime.protocol.framing import WireError
from remotecell_runtime.protocol.image_spec import ImageSpec
from remotecell_runtime.protocol.message import Decoder, Message, message, wire
from remotecell_runtime.protocol.messages import apps, blobs, calls, containers, images, jobs, session, stores

MODULES = [session, calls, containers, apps, jobs, stores, blobs, images]


def _classes() -> list[type[Message]]:
    return [cls for module in MODULES for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Message) and cls is not Message and cls.__module__ == module.__name__]


@message()
class Part(Message):
    id: str
    n_payloads: int = wire("np", default=1)


@message("probe")
class ProbeMsg(Message):
    id: str
    method: str | None = wire("m", default=None)
    flag: bool = False
    ratio: float = 0.5
    names: list[str] = wire(factory=list)
    parts: list[Part] = wire("e", factory=list)
    one: Part | None = None
    extra: Any = None


def test_a_message_reads_back_what_it_wrote_under_its_short_keys():
    msg = ProbeMsg(id="a", method="f", flag=True, ratio=2, names=["x"], parts=[Part(id="p", n_payloads=2)],
                   one=Part(id="q"))
    wire_header = msg.to_wire()
    assert wire_header == {"t": "probe", "id": "a", "m": "f", "flag": True, "ratio": 2, "names": ["x"],
                           "e": [{"id": "p", "np": 2}], "one": {"id": "q"}}
    assert ProbeMsg.from_wire(wire_header) == msg


def test_fields_left_at_their_default_stay_off_the_wire():
    assert ProbeMsg(id="a").to_wire() == {"t": "probe", "id": "a"}
    assert ProbeMsg.from_wire({"id": "a"}) == ProbeMsg(id="a")


def test_a_nested_message_left_out_takes_its_default_and_one_given_is_read():
    @message("outer")
    class OuterMsg(Message):
        part: Part = wire(factory=lambda: Part(id="default"))

    assert OuterMsg.from_wire({}).part == Part(id="default")
    assert OuterMsg.from_wire({"part": {"id": "given", "np": 3}}).part == Part(id="given", n_payloads=3)


def test_unknown_keys_from_a_newer_peer_are_ignored():
    assert ProbeMsg.from_wire({"id": "a", "from_the_future": [1, 2]}) == ProbeMsg(id="a")


@pytest.mark.parametrize(("header", "error"), [
    ({}, "a 'probe' message needs 'id'"),
    ({"id": 3}, "'probe' field 'id' must be a string, got 3"),
    ({"id": "a", "m": 1}, "'probe' field 'm' must be a string or null, got 1"),
    ({"id": "a", "flag": 1}, "'probe' field 'flag' must be true or false, got 1"),
    ({"id": "a", "ratio": "x"}, "'probe' field 'ratio' must be a number, got 'x'"),
    ({"id": "a", "ratio": True}, "'probe' field 'ratio' must be a number, got True"),
    ({"id": "a", "names": ["x", 2]}, "'probe' field 'names' must be a list of strings, got \\['x', 2\\]"),
    ({"id": "a", "e": [{"id": "p"}, 7]}, "'probe' field 'e' must be a list of JSON objects"),
    ({"id": "a", "e": [{"id": 1}]}, "'Part' field 'id' must be a string, got 1"),
    ({"id": "a", "one": "q"}, "'probe' field 'one' must be a JSON object or null, got 'q'"),
])
def test_a_bad_field_is_refused_naming_the_field_the_type_and_the_message(header, error):
    with pytest.raises(WireError, match=error):
        ProbeMsg.from_wire(header)


def test_a_field_named_like_a_builtin_does_not_break_the_checks():
    @message("named")
    class NamedMsg(Message):
        type: str
        all: list[str]
        id: str

    assert NamedMsg.from_wire({"type": "x", "all": ["a"], "id": "i"}) == NamedMsg(type="x", all=["a"], id="i")


def test_a_decoder_reads_each_type_as_its_class_and_refuses_an_unknown_one():
    decode = Decoder([ProbeMsg, calls.CancelMsg])
    assert decode({"t": "cancel", "ids": ["a"]}) == calls.CancelMsg(ids=["a"])
    with pytest.raises(WireError, match="unknown message type 'nope'"):
        decode({"t": "nope"})


def test_a_decoder_refuses_two_classes_of_one_type_and_entries():
    with pytest.raises(TypeError, match="two message classes of type 'hello'"):
        Decoder([session.HelloMsg, containers.ContainerHelloMsg])
    with pytest.raises(TypeError, match="Part is an entry"):
        Decoder([Part])


def test_an_unsupported_annotation_fails_at_first_use_naming_the_field():
    @message("bad")
    class BadMsg(Message):
        when: set[str]

    with pytest.raises(TypeError, match="field 'when': a message field must be"):
        BadMsg.from_wire({"when": []})


def test_a_subclass_reads_and_writes_as_itself():
    assert type(apps.ScheduleRunMsg.from_wire({"app": "a", "name": "f"})) is apps.ScheduleRunMsg
    assert apps.ScheduleGetMsg(app="a", name="f").to_wire()["t"] == "schedule_get"


def test_every_catalogue_class_reads_back_its_own_minimal_header():
    """Each class, filled with a sample value per required field, survives to_wire/from_wire."""
    samples: dict[Any, Any] = {str: "s", int: 1, float: 1.5, bool: True}
    classes = _classes()
    assert len(classes) > 60
    for cls in classes:
        hints = {k: v for c in reversed(cls.__mro__) for k, v in c.__dict__.get("__annotations__", {}).items()}
        required = [f for f in cls.__msg_fields__
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        values = {f.name: _sample(hints[f.name], samples) for f in required}
        msg = cls(**values)
        assert cls.from_wire(msg.to_wire()) == msg, cls.__name__


def _sample(hint: Any, samples: dict[Any, Any]) -> Any:
    text = str(hint)
    for kind, value in samples.items():
        if text == kind.__name__:
            return value
    if text.startswith("list["):
        return []
    if text.startswith("dict["):
        return {}
    if text == "ErrorInfo":
        return session.ErrorInfo(type="InvalidError", message="m")
    if text == "ImageSpec":
        return ImageSpec()
    return None


def test_entries_pair_with_their_payloads_in_order():
    entries = [Part(id="a"), Part(id="b", n_payloads=2), Part(id="c", n_payloads=0)]
    payloads = [framing.Payload([bytes([i])]) for i in range(3)]
    paired = framing.pair(entries, payloads)
    assert [(e.id, [p.frames[0] for p in own]) for e, own in paired] == [
        ("a", [b"\x00"]), ("b", [b"\x01", b"\x02"]), ("c", [])]
    with pytest.raises(WireError, match="payloads are not described"):
        framing.pair(entries[:1], payloads)
    with pytest.raises(WireError, match="does not match the 3 payloads"):
        framing.pair([Part(id="a", n_payloads=4)], payloads)


def test_a_result_entry_carries_an_error_as_typed_fields():
    header = {"t": "result", "id": "i", "status": "error", "us": 12,
              "error": {"type": "ValueError", "message": "bad", "traceback": "tb", "frames": [["f.py", 1, "f", ""]]}}
    msg = calls.ResultMsg.from_wire(header)
    assert msg.error is not None and msg.error.type == "ValueError" and msg.run_us == 12
    assert msg.to_wire() == header


def test_an_input_sent_with_others_keeps_what_its_call_said():
    """A generator's input, queued and sent to its container inside a ``calls`` message, is still a generator's."""
    from remotecell_runtime.pools import Input

    inp = Input("i", (None, b"peer"), framing.Payload([b"args"]), None, "predict", True, gen=True)
    head, payloads = inp.entry()
    assert calls.CallEntry.from_wire(head) == calls.CallEntry(id="i", method="predict", shm=True, gen=True)
    assert payloads == [inp.payload]
