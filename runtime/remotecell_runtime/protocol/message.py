"""Typed messages: one class per message type, named fields, checked when read off the wire.

A message class is a class made with ``@message("type")`` (``@message()``
for an entry of a many-entries message, which has no type of its own).  Its
fields are its header's fields; ``wire("k")`` gives a field a short key on the
wire (code only ever uses the field's name), a default makes it optional there.
Each class gets its ``__init__`` and two codecs, generated at their first use
(a process imports the whole catalogue and speaks a few types):

- ``from_wire(header)``: the message of a decoded header, every field checked
  against its annotation (``str``, ``int``, ``float``, ``bool``, ``dict``,
  ``list``, ``list[str]``, ``list[int]``, a message class, a list of them or a
  ``dict[str, ...]`` of them, ``Any``, and ``X | None``); a missing or mistyped field raises ``WireError``
  naming the field, the type it must have and the message type.  Unknown keys
  are ignored, so a newer peer's extra fields do no harm.
- ``to_wire()``: the header dict, the type under ``t``, fields left at their
  default omitted (the wire stays as compact as a hand-written dict).

Invariant: decoding never unpickles and never runs code from the message; the
generated functions depend on the class alone.  They are generated (not a loop
over fields) because the hot path decodes one per call.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

from .framing import Frame, Payload, WireError
from .framing import encode as encode_header

M = TypeVar("M", bound="Message")

_MISSING = dataclasses.MISSING
_LITERALS = (type(None), bool, int, float, str)


class Message:
    """The base of every message class: its type name, and the two generated codecs."""

    TYPE: ClassVar[str] = ""
    __slots__ = ()

    @classmethod
    def from_wire(cls: type[M], header: dict[str, Any]) -> M:  # replaced on every class by @message
        raise NotImplementedError

    def to_wire(self) -> dict[str, Any]:  # replaced on every class by @message
        raise NotImplementedError

    __msg_fields__: ClassVar[tuple[dataclasses.Field[Any], ...]] = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and type(other) is type(self) and self.values() == other.values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.__msg_fields__)
        return f"{type(self).__name__}({shown})"

    def values(self) -> dict[str, Any]:
        """Every field by name, defaults included (what a user-facing dict of it shows)."""
        return {f.name: getattr(self, f.name) for f in self.__msg_fields__}

    def fields(self) -> dict[str, Any]:  # replaced on every class by @message, as to_wire
        """The header without its type: this message as a field, or an entry, of another."""
        raise NotImplementedError


def encode(msg: Message, payloads: typing.Sequence[Payload] = ()) -> list[Frame]:
    """The frames of ``msg`` and its payloads."""
    return encode_header(msg.to_wire(), payloads)


def wire(key: str | None = None, *, default: Any = _MISSING, factory: Callable[[], Any] | None = None) -> Any:
    """A field that travels under the short ``key`` (else its name); with ``default`` or ``factory`` it may be
    left out (``factory`` for a list or dict: an empty one is left out too)."""
    metadata = {} if key is None else {"wire": key}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass_transform(kw_only_default=True, field_specifiers=(wire, dataclasses.field))
def message(type_name: str = "") -> Callable[[type[M]], type[M]]:
    """Make ``cls`` a message of ``type_name``: keyword-only fields in slots, with its codecs.

    Example::

        @message("call")
        class CallMsg(Message):
            id: str
            method: str | None = wire("m", default=None)

        CallMsg.from_wire({"t": "call", "id": "a1"}).method  # None
    """

    def make(cls: type[M]) -> type[M]:
        made = _slotted(cls)
        made.TYPE = type_name
        # Made at first use (see the module's docstring): a dataclass costs ~0.3 ms a class at import.
        made.__init__ = _init_first  # type: ignore[method-assign, assignment]
        made.from_wire = classmethod(_from_wire_first)  # type: ignore[assignment]
        made.to_wire = _to_wire_first  # type: ignore[method-assign]
        made.fields = _fields_first  # type: ignore[method-assign]
        return made

    return make


def _slotted(cls: type[M]) -> type[M]:
    """``cls`` again with ``__slots__`` for its own fields; every field (inherited first) in ``__msg_fields__``."""
    inherited = list(getattr(cls, "__msg_fields__", ()))
    namespace = dict(cls.__dict__)
    own = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = namespace.pop(name, _MISSING)
        f = value if isinstance(value, dataclasses.Field) else dataclasses.field(default=value)
        f.name = name
        own.append(f)
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = tuple(f.name for f in own)
    namespace["__msg_fields__"] = (*inherited, *own)
    made: Any = type(cls.__name__, cls.__bases__, namespace)
    return typing.cast("type[M]", made)


def _init_first(self: Message, **values: Any) -> None:
    cls = type(self)
    fields = cls.__msg_fields__
    env: dict[str, Any] = {"_MISSING": _MISSING}
    params, lines = [], []
    for f in fields:
        if f.default_factory is not _MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            lines.append(f"self.{f.name} = _factory_{f.name}() if {f.name} is _MISSING else {f.name}")
            continue
        if f.default is not _MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
        lines.append(f"self.{f.name} = {f.name}")
    signature = f"self, *, {', '.join(params)}" if params else "self"
    body = "\n".join(f"    {line}" for line in lines) or "    pass"
    exec(f"def __init__({signature}):\n{body}\n", env)
    cls.__init__ = env["__init__"]  # type: ignore[method-assign]
    cls.__init__(self, **values)


def _from_wire_first(cls: type[M], header: dict[str, Any]) -> M:
    _generate(cls, "from_wire")
    return cls.from_wire(header)


def _to_wire_first(self: Message) -> dict[str, Any]:
    _generate(type(self), "to_wire")
    return self.to_wire()


def _fields_first(self: Message) -> dict[str, Any]:
    _generate(type(self), "fields")
    return self.fields()


def _generate(cls: type[Message], which: str) -> None:
    """Make codec ``which`` (``from_wire``, ``to_wire`` or ``fields``) of ``cls``.

    One at a time, at its first use: compiling the source is most of the cost (~1 ms for a
    message of 30 fields), and a process mostly reads some types and writes others.
    """
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {"cls": cls, "WireError": WireError, "_MISSING": _MISSING, "_new": object.__new__}
    reads, writes = [], []
    for f in cls.__msg_fields__:
        key = f.metadata.get("wire", f.name)
        shape = _describe(hints[f.name], env, f.name)
        env[f"_want_{f.name}"] = shape.want
        env[f"_default_{f.name}"] = f.default
        env[f"_factory_{f.name}"] = f.default_factory
        if which == "from_wire":
            reads.extend(_read(f, key, shape, cls.TYPE or cls.__name__))
        else:
            writes.extend(_write(f, key, shape))
    if which == "from_wire":
        # Fields are set on a bare instance as they are read: the dataclass __init__ (keywords, defaults
        # again) costs as much as all the checks; everything __init__ would do is done here.
        lines = ["def from_wire(c, h):", "    o = _new(cls)", *(f"    {line}" for line in reads), "    return o"]
    else:
        head = f"{{'t': {cls.TYPE!r}}}" if which == "to_wire" and cls.TYPE else "{}"
        lines = [f"def {which}(self):", f"    h = {head}", *(f"    {line}" for line in writes), "    return h"]
    exec("\n".join(lines), env)
    setattr(cls, which, classmethod(env[which]) if which == "from_wire" else env[which])


def _default_expr(f: dataclasses.Field[Any]) -> str | None:
    """The default as an expression of the generated code, or None for a required field."""
    if f.default_factory is not _MISSING:
        return f"_factory_{f.name}()"
    if f.default is _MISSING:
        return None
    return repr(f.default) if isinstance(f.default, _LITERALS) else f"_default_{f.name}"


def _read(f: dataclasses.Field[Any], key: str, shape: Shape, type_name: str) -> list[str]:
    """The lines that read field ``f`` from header ``h`` into the bare instance ``o``.

    ``key in h`` then ``h[key]``, not ``h.get(key, _MISSING)``: most optional fields are left off the
    wire, and a missing one then costs a test and its default (a third of a call's decoding).
    """
    # Locals are v_<field>: a field named like a builtin the checks use (``type``) must not shadow it.
    name, default = f"v_{f.name}", _default_expr(f)
    bad = f"raise WireError(f\"{type_name!r} field {key!r} must be {{_want_{f.name}}}, got {{{name}!r:.80}}\")"
    value = name if shape.build is None else shape.build.format(v=name)
    read = [f"{name} = h[{key!r}]", f"if not ({shape.check.format(v=name)}): {bad}", f"o.{f.name} = {value}"]
    if default is None:
        return [f"if {key!r} not in h: raise WireError({f'a {type_name!r} message needs {key!r}'!r})", *read]
    return [f"if {key!r} in h:", *(f"    {line}" for line in read), "else:", f"    o.{f.name} = {default}"]


def _write(f: dataclasses.Field[Any], key: str, shape: Shape) -> list[str]:
    value = f"self.{f.name}"
    if shape.dump is not None:
        value = shape.dump.format(v=value)
    default = _default_expr(f)
    if default is None:
        return [f"h[{key!r}] = {value}"]
    if f.default_factory is not _MISSING:
        return [f"if self.{f.name}: h[{key!r}] = {value}"]
    compare = "is not" if f.default is None or isinstance(f.default, bool) else "!="
    return [f"if self.{f.name} {compare} {default}: h[{key!r}] = {value}"]


_SIMPLE: dict[Any, tuple[str, str]] = {
    str: ("type({v}) is str", "a string"),
    int: ("type({v}) is int", "an integer"),
    float: ("type({v}) in (int, float)", "a number"),
    bool: ("type({v}) is bool", "true or false"),
    dict: ("type({v}) is dict", "a JSON object"),
    list: ("type({v}) is list", "a list"),
}


class Shape(typing.NamedTuple):
    """How one field is read and written by the generated codecs; templates over ``{v}``, the value."""

    want: str  # in words, for the error
    check: str  # true when the wire value is of the right shape
    build: str | None = None  # the field's value from the wire value, for nested messages
    dump: str | None = None  # the wire value from the field's value, for nested messages


def _describe(hint: Any, env: dict[str, Any], name: str) -> Shape:
    """What a field must be on the wire, and for nested messages how to build and dump it."""
    args, origin = typing.get_args(hint), typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"field {name!r}: only 'X | None' unions are supported, got {hint!r}")
        shape = _describe(inner[0], env, name)
        if shape.build is None or shape.dump is None:
            return Shape(f"{shape.want} or null", f"{{v}} is None or ({shape.check})")
        return Shape(f"{shape.want} or null", f"{{v}} is None or ({shape.check})",
                     f"(None if {{v}} is None else {shape.build})", f"(None if {{v}} is None else {shape.dump})")
    if hint is Any:
        return Shape("anything", "True")
    nested = _nested(hint, args, origin)
    if nested is not None:
        kind, env[f"_cls_{name}"] = nested
        want, check, build, dump = _NESTED[kind]
        return Shape(want, check, build.format(c=f"_cls_{name}"), dump)
    item = args[0] if origin is list and len(args) == 1 else None
    if item in (str, int):
        return Shape(f"a list of {_SIMPLE[item][1].split(' ', 1)[1]}s",
                     f"type({{v}}) is list and all(type(e) is {item.__name__} for e in {{v}})")
    if (origin or hint) in _SIMPLE:
        check, want = _SIMPLE[origin or hint]
        return Shape(want, check)
    raise TypeError(f"field {name!r}: a message field must be str, int, float, bool, dict, list, list[str], "
                    f"list[int], a message, a list or dict[str, ...] of messages or Any (or one of those | None); "
                    f"got {hint!r}")


def _is_message(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Message)


def _nested(hint: Any, args: tuple[Any, ...], origin: Any) -> tuple[str, type[Message]] | None:
    """``("one" | "list" | "dict", the message class)`` for a nested field, else None."""
    if _is_message(hint):
        return "one", hint
    if origin is list and len(args) == 1 and _is_message(args[0]):
        return "list", args[0]
    if origin is dict and len(args) == 2 and args[0] is str and _is_message(args[1]):
        return "dict", args[1]
    return None


# Nested messages travel as their fields: (want, check, build, dump); ``{c}`` in a build is the class.
_NESTED: dict[str, tuple[str, str, str, str]] = {
    "one": ("a JSON object", "type({v}) is dict", "{c}.from_wire({{v}})", "{v}.fields()"),
    "list": ("a list of JSON objects", "type({v}) is list and all(type(e) is dict for e in {v})",
                  "[{c}.from_wire(e) for e in {{v}}]", "[e.fields() for e in {v}]"),
    "dict": ("a JSON object of JSON objects", "type({v}) is dict and all(type(e) is dict for e in {v}.values())",
                  "{{{{k: {c}.from_wire(e) for k, e in {{v}}.items()}}}}", "{{k: e.fields() for k, e in {v}.items()}}"),
}


class Decoder:
    """Reads a header as the message class of its type, one of the classes it was made with.

    Example::

        decode = Decoder([CallMsg, CancelMsg])
        decode({"t": "call", "id": "a1"})  # CallMsg(id='a1', method=None)
    """

    def __init__(self, classes: typing.Iterable[type[Message]]) -> None:
        self.by_type: dict[str, type[Message]] = {}
        for cls in classes:
            if not cls.TYPE:
                raise TypeError(f"{cls.__name__} is an entry, not a message: it has no type to decode by")
            other = self.by_type.setdefault(cls.TYPE, cls)
            if other is not cls:
                raise TypeError(f"two message classes of type {cls.TYPE!r}: {other.__name__}, {cls.__name__}")

    def __call__(self, header: dict[str, Any]) -> Message:
        cls = self.by_type.get(header.get("t"))  # type: ignore[arg-type]
        if cls is None:
            raise WireError(f"unknown message type {header.get('t')!r}")
        return cls.from_wire(header)
