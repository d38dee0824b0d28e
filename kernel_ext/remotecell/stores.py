"""Dict and Queue: named (or ephemeral) key-value stores and FIFO queues kept by the runtime.

Every client and container connected to the same runtime sees the same named
objects, and they survive a runtime restart.  Values are pickled here and
travel as opaque payloads: the runtime stores bytes and never unpickles them.
Dict keys must be str, int, float, bytes, bool, None or tuples of them; a key
travels as its canonical pickle, so keys match by value *and* type (``1``,
``1.0`` and ``True`` are three different keys).

Every blocking method has an ``.aio`` twin: ``d.get(k)`` / ``await d.get.aio(k)``.
A blocking ``Queue.get`` waits on the runtime (no polling here), asking again
every ``MAX_WAIT_S`` or so when it waits without a timeout.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import functools
import io
import pickle
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from remotecell_runtime.protocol import pickling
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.message import Message
from remotecell_runtime.protocol.messages.session import EmptyReply
from remotecell_runtime.protocol.messages.stores import (
    CountReply,
    DictClearMsg,
    DictFoundReply,
    DictGetMsg,
    DictLenMsg,
    DictPopMsg,
    DictPutMsg,
    DictPutReply,
    DictScanMsg,
    DictScanReply,
    KvCancelMsg,
    KvDeleteMsg,
    KvListMsg,
    KvListReply,
    KvOpenMsg,
    KvOpenReply,
    QueueClearMsg,
    QueueGetMsg,
    QueueLenMsg,
    QueuePeekMsg,
    QueuePutMsg,
    QueueWait,
)

from . import _bridge, _client
from ._bridge import Twin, twin
from .exceptions import InvalidError, NotFoundError, PayloadTooLarge

S = TypeVar("S", bound="_Store")
R = TypeVar("R", bound=Message)

# What the runtime allows unless it says otherwise in its answer to kv_open.
DEFAULT_LIMITS = {"dict_value_bytes": 100 << 20, "dict_key_bytes": 64 << 10, "queue_item_bytes": 1 << 20,
                  "partition_chars": 64}
_KEY_SCALARS = (str, int, float, bytes, bool, type(None))
PARTITION_TTL_S = 24 * 3600  # Modal's default partition_ttl; accepted, items do not expire here


class _FromName:
    """``X.from_name(name, create_if_missing=False)`` and its ``.aio`` twin, on the class."""

    def __get__(self, obj: Any, owner: type[_Store]) -> Twin:
        async def from_name(name: str, *, create_if_missing: bool = False, environment_name: str | None = None,
                            ) -> Any:
            _checked_environment(environment_name)
            return await owner._open(name, create_if_missing)

        from_name.__doc__ = (f"The {owner.__name__} named ``name``, shared by every client and container of the "
                             "runtime; NotFoundError if there is none, unless ``create_if_missing``.")
        return twin(from_name)


class _Ephemeral:
    """``with X.ephemeral() as x:`` (and ``async with X.ephemeral.aio() as x:``): deleted when the block ends."""

    def __get__(self, obj: Any, owner: type[_Store]) -> Twin:
        @contextlib.asynccontextmanager
        async def ephemeral_aio() -> AsyncIterator[Any]:
            store = await owner._open(None, True)
            try:
                yield store
            finally:
                await store._delete()

        return Twin(lambda: _bridge.blocking_context(ephemeral_aio()), ephemeral_aio, self.__doc__)


class _FromId:
    """``X.from_id(object_id)`` and its ``.aio`` twin: the store of that id (``NotFoundError`` if it is gone)."""

    def __get__(self, obj: Any, owner: type[_Store]) -> Twin:
        async def from_id(object_id: str) -> Any:
            return await owner._open_id(object_id)

        from_id.__doc__ = f"The {owner.__name__} whose ``object_id`` is ``object_id``, from any client or container."
        return twin(from_id)


@dataclass(frozen=True)
class StoreInfo:
    """What ``d.info()`` / ``q.info()`` says (Modal's ``DictInfo`` / ``QueueInfo``)."""

    name: str | None  # None for an ephemeral store
    created_at: datetime.datetime
    created_by: str | None = None  # the runtime has no accounts


DictInfo = QueueInfo = StoreInfo


class _StoreManager:
    """``X.objects``, Modal's namespace for named stores: ``create``, ``list``, ``delete`` (each with ``.aio``)."""

    def __init__(self, store: type[_Store]) -> None:
        self._store = store
        self.create = twin(self._create)
        self.list = twin(self._list)
        self.delete = twin(self._delete)

    async def _create(self, name: str, *, allow_existing: bool = False) -> None:
        """Make the named store; ``AlreadyExistsError`` if it is there, unless ``allow_existing``."""
        store = self._store
        _checked_name(name, store)
        await _client.connection().ask_aio(KvOpenMsg(kind=store._kind, name=name, create=True,
                                                     exclusive=not allow_existing), KvOpenReply)

    async def _list(self, *, max_objects: int | None = None,
                    created_before: datetime.datetime | str | None = None) -> builtins.list[Any]:
        """The named stores of this kind, newest first, as handles; at most ``max_objects``, made before
        ``created_before`` (a datetime or an ISO date) when given."""
        if max_objects is not None and (not isinstance(max_objects, int) or max_objects < 0):
            raise InvalidError(f"max_objects={max_objects!r}: give a count >= 0, or None for all")
        before = _timestamp(created_before)
        reply, _ = await _client.connection().ask_aio(KvListMsg(), KvListReply)
        rows = [r for r in reply.stores if r["kind"] == self._store._kind and r["name"] is not None
                and (before is None or r["created_at"] < before)]
        rows.sort(key=lambda r: (-r["created_at"], -r["id"]))
        found = [self._store(r["id"], r["name"], {}, r["created_at"]) for r in rows]
        return found if max_objects is None else found[:max_objects]

    async def _delete(self, name: str, *, allow_missing: bool = False) -> None:
        """Delete the named store and everything in it; ``NotFoundError`` if there is none, unless
        ``allow_missing``."""
        _checked_name(name, self._store)
        try:
            store = await self._store._open(name, False)
        except NotFoundError:
            if allow_missing:
                return
            raise
        await store._delete()


class _Objects:
    def __get__(self, obj: Any, owner: type[_Store]) -> _StoreManager:
        return _StoreManager(owner)


def _checked_environment(environment_name: Any) -> None:
    """Modal's ``environment_name=``: accepted; a runtime has one environment, so it changes nothing."""
    if environment_name is not None and not isinstance(environment_name, str):
        raise InvalidError(f"environment_name={environment_name!r} must be a string (or None)")


def _checked_name(name: Any, store: type[_Store]) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidError(f"name {name!r}: give a non-empty string, e.g. {store.__name__}.from_name('results')")


def _timestamp(value: datetime.datetime | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidError(f"created_before={value!r} is not an ISO date such as '2025-01-01'") from None
    if not isinstance(value, datetime.datetime):
        raise InvalidError(f"created_before={value!r}: give a datetime or an ISO date string")
    return value.timestamp()


class _Store:
    """What Dict and Queue share: the object's id on the runtime, its limits, and requests about it."""

    _kind = ""
    _prefix = ""
    _info_type = StoreInfo
    from_name = _FromName()
    from_id = _FromId()
    ephemeral = _Ephemeral()
    objects = _Objects()
    _methods: tuple[str, ...] = ()  # each ``_m`` coroutine method is offered as ``m(...)`` and ``m.aio(...)``

    def __init__(self, oid: int, name: str | None, limits: dict[str, int], created_at: float | None = None) -> None:
        self._oid = oid
        self.name = name
        self.limits = {**DEFAULT_LIMITS, **limits}
        self._created_at = created_at
        for method in self._methods + ("info",):
            setattr(self, method, twin(getattr(self, f"_{method}")))

    @property
    def object_id(self) -> str:
        """The store's id, as Modal's: ``di-…`` for a Dict, ``qu-…`` for a Queue (``from_id`` takes it)."""
        return f"{self._prefix}-{self._oid}"

    def __reduce__(self) -> Any:  # into a container: the same object on the same runtime
        return (type(self), (self._oid, self.name, self.limits, self._created_at))

    def __repr__(self) -> str:
        return f"<rc.{type(self).__name__} {self.name or f'ephemeral {self.object_id}'}>"

    async def _info(self) -> StoreInfo:
        """Its name (None when ephemeral), when it was made, and by whom (no accounts here: None)."""
        if self._created_at is None:
            reply, _ = await _client.connection().ask_aio(KvOpenMsg(kind=self._kind, oid=self._oid), KvOpenReply)
            self._created_at = reply.created_at
        created = datetime.datetime.fromtimestamp(self._created_at or 0.0, datetime.timezone.utc).astimezone()
        return self._info_type(name=self.name, created_at=created)

    @classmethod
    def _from_reply(cls: type[S], reply: KvOpenReply, name: str | None) -> S:
        return cls(reply.oid, name if name is not None else reply.name, reply.limits, reply.created_at)

    async def _request(self, msg: Message, answer: type[R], payloads: list[Payload] | None = None,
                       ) -> tuple[R, list[Payload]]:
        conn = _client.connection()
        header = conn.envelope(msg)
        channel = conn.async_channel()
        try:
            reply, reply_payloads = await channel.roundtrip(header, payloads or [])
        except asyncio.CancelledError:  # Ctrl-C or a cancelled task: the runtime stops waiting for us
            await channel.send(conn.envelope(KvCancelMsg(ids=[header["id"]])))
            raise
        return answer.from_wire(reply), reply_payloads

    def _value(self, obj: Any, what: str, limit: str) -> Payload:
        """``obj`` pickled, if it is within the runtime's limit."""
        payload = pickling.serialize(obj)  # inline: the runtime keeps the bytes, not a shared-memory segment
        if payload.nbytes > self.limits[limit]:
            raise PayloadTooLarge(
                f"{what} of {payload.nbytes:,} bytes pickled is over the limit of {self.limits[limit]:,} bytes "
                f"({limit}): store something smaller, e.g. the path of a file on a Volume")
        return payload

    @classmethod
    async def _open(cls: type[S], name: str | None, create: bool) -> S:
        if name is not None:
            _checked_name(name, cls)
        reply, _ = await _client.connection().ask_aio(KvOpenMsg(kind=cls._kind, name=name, create=create),
                                                      KvOpenReply)
        return cls._from_reply(reply, name)

    @classmethod
    async def _open_id(cls: type[S], object_id: str) -> S:
        prefix, _, number = object_id.partition("-") if isinstance(object_id, str) else ("", "", "")
        if prefix != cls._prefix or not number.isdigit():
            raise InvalidError(f"{object_id!r} is not a {cls.__name__} id: they look like '{cls._prefix}-12', "
                               f"as in {cls.__name__.lower()}.object_id")
        reply, _ = await _client.connection().ask_aio(KvOpenMsg(kind=cls._kind, oid=int(number)), KvOpenReply)
        return cls._from_reply(reply, None)

    async def _delete(self) -> None:
        await self._request(KvDeleteMsg(oid=self._oid, kind=self._kind), EmptyReply)


def _key_bytes(key: Any) -> bytes:
    """The canonical encoding of a Dict key: its pickle without memo references (the same bytes every time)."""
    if not _plain_key(key):
        raise InvalidError(f"Dict key {key!r:.80} (type {type(key).__name__}): keys must be str, int, float, bytes, "
                           "bool, None, or tuples of them")
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True  # no memo: equal keys give equal bytes, however their parts are shared
    pickler.dump(key)
    return out.getvalue()


def _plain_key(key: Any) -> bool:
    if type(key) is tuple:
        return all(_plain_key(part) for part in key)
    return type(key) in _KEY_SCALARS


class Dict(_Store):
    """A persistent key-value store on the runtime.

    >>> d = rc.Dict.from_name("results", create_if_missing=True)
    >>> d["model"] = {"acc": 0.93}          # or d.put("model", ...), d.update({...})
    >>> d.get("model")                       # {'acc': 0.93}; d.get("missing") -> None
    >>> "model" in d, len(d), list(d.keys())
    >>> with rc.Dict.ephemeral() as scratch: # deleted when the block ends
    ...     scratch.put("k", 1)
    >>> await d.get.aio("model")             # every method has an .aio twin
    """

    _kind = "dict"
    _prefix = "di"
    _methods = ("get", "put", "update", "pop", "contains", "len", "clear")
    get: Twin
    put: Twin
    update: Twin
    pop: Twin
    contains: Twin
    len: Twin
    clear: Twin

    def __init__(self, oid: int, name: str | None, limits: dict[str, int], created_at: float | None = None) -> None:
        super().__init__(oid, name, limits, created_at)
        self.keys = self._scanner("keys")
        self.values = self._scanner("values")
        self.items = self._scanner("items")

    def _key_payload(self, key: Any) -> Payload:
        encoded = _key_bytes(key)
        if len(encoded) > self.limits["dict_key_bytes"]:
            raise PayloadTooLarge(f"Dict key {key!r:.80} of {len(encoded):,} bytes pickled is over the limit of "
                                  f"{self.limits['dict_key_bytes']:,} bytes (dict_key_bytes); use a shorter key")
        return Payload([encoded])

    def _pairs(self, pairs: Iterable[tuple[Any, Any]]) -> list[Payload]:
        payloads = []
        for key, value in pairs:
            payloads += [self._key_payload(key), self._value(value, f"the value of key {key!r:.80}",
                                                             "dict_value_bytes")]
        return payloads

    async def _get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        reply, payloads = await self._request(DictGetMsg(oid=self._oid), DictFoundReply, [self._key_payload(key)])
        return pickling.deserialize(payloads[0]) if reply.found else default

    async def _put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set ``key``; with ``skip_if_exists`` an existing value stays. True if the value was written."""
        reply, _ = await self._request(DictPutMsg(oid=self._oid, skip_if_exists=skip_if_exists), DictPutReply,
                                       self._pairs([(key, value)]))
        return bool(reply.written)

    async def _update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set many keys in one request, as ``dict.update`` (a mapping, pairs, or keywords)."""
        pairs = list(dict(other, **kwargs).items())
        if pairs:
            await self._request(DictPutMsg(oid=self._oid), DictPutReply, self._pairs(pairs))

    async def _pop(self, key: Any, *default: Any) -> Any:
        """Remove ``key`` and return its value; KeyError if missing and no default is given."""
        reply, payloads = await self._request(DictPopMsg(oid=self._oid), DictFoundReply, [self._key_payload(key)])
        if reply.found:
            return pickling.deserialize(payloads[0])
        if default:
            return default[0]
        raise KeyError(key)

    async def _contains(self, key: Any) -> bool:
        reply, _ = await self._request(DictGetMsg(oid=self._oid, exists_only=True), DictFoundReply,
                                       [self._key_payload(key)])
        return reply.found

    async def _len(self) -> int:
        reply, _ = await self._request(DictLenMsg(oid=self._oid), CountReply)
        return reply.n

    async def _clear(self) -> None:
        """Remove every key."""
        await self._request(DictClearMsg(oid=self._oid), EmptyReply)

    async def _scan(self, what: str) -> AsyncIterator[Any]:
        """Keys, values or (key, value) pairs in insertion order, fetched a page at a time."""
        after: int | None = 0
        while after is not None:
            reply, payloads = await self._request(DictScanMsg(oid=self._oid, what=what, after=after),
                                                  DictScanReply)
            after = reply.next
            if what == "items":
                for i in range(0, len(payloads), 2):
                    yield pickling.deserialize(payloads[i]), pickling.deserialize(payloads[i + 1])
            else:
                for payload in payloads:
                    yield pickling.deserialize(payload)

    def _scanner(self, what: str) -> Twin:
        return Twin(lambda: _bridge.iterate(self._scan(what)), lambda: self._scan(what), self._scan.__doc__)

    def __getitem__(self, key: Any) -> Any:
        missing = object()
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return bool(self.contains(key))

    def __len__(self) -> int:
        return int(self.len())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())


class Queue(_Store):
    """A persistent FIFO queue on the runtime, with optional partitions (independent FIFOs by name).

    >>> q = rc.Queue.from_name("jobs", create_if_missing=True)
    >>> q.put(1); q.put_many([2, 3])
    >>> q.get()                              # 1; waits for an item when empty
    >>> q.get(timeout=5)                     # queue.Empty if nothing arrives within 5 s
    >>> q.get(block=False)                   # None when empty
    >>> q.get_many(10)                       # [2, 3]: up to 10, waiting for at least one
    >>> q.put("x", partition="gpu0"); q.len(partition="gpu0"), q.len(total=True)
    >>> await q.get.aio()                    # every method has an .aio twin
    """

    _kind = "queue"
    _prefix = "qu"
    _methods = ("put", "put_many", "get", "get_many", "len", "clear")
    put: Twin
    put_many: Twin
    get: Twin
    get_many: Twin
    len: Twin
    clear: Twin

    def __init__(self, oid: int, name: str | None, limits: dict[str, int], created_at: float | None = None) -> None:
        super().__init__(oid, name, limits, created_at)
        self.iterate = Twin(lambda **kw: _bridge.iterate(self._iterate(**kw)), self._iterate,
                            self._iterate.__doc__)

    def _partition(self, partition: str | None) -> str:
        if partition is None:
            return ""
        if not isinstance(partition, str) or not 0 < len(partition) <= self.limits["partition_chars"]:
            raise InvalidError(f"partition={partition!r}: give a string of 1 to {self.limits['partition_chars']} "
                               "characters, or None for the default partition")
        return partition

    async def _put(self, v: Any, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
                   partition_ttl: int = PARTITION_TTL_S) -> None:
        """Add ``v`` at the end of the queue (of ``partition``).

        Modal's ``block``, ``timeout`` and ``partition_ttl`` are accepted: this runtime's queues have no
        size cap to wait on, and their items stay until taken or cleared."""
        await self._put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    async def _put_many(self, vs: Iterable[Any], block: bool = True, timeout: float | None = None, *,
                        partition: str | None = None, partition_ttl: int = PARTITION_TTL_S) -> None:
        """Add every value of ``vs``, in order, in one request."""
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidError(f"timeout={timeout!r}: give seconds >= 0, or None")
        check_ttl = partition_ttl if isinstance(partition_ttl, int) and not isinstance(partition_ttl, bool) else -1
        if check_ttl <= 0:
            raise InvalidError(f"partition_ttl={partition_ttl!r}: give whole seconds > 0 (it has no effect here)")
        key = self._partition(partition)
        payloads = [self._value(v, "a Queue item", "queue_item_bytes") for v in vs]
        if payloads:
            await self._request(QueuePutMsg(oid=self._oid, partition=key), CountReply, payloads)

    async def _get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None) -> Any:
        """The oldest item, removed. ``block=False``: None when empty; a ``timeout`` that passes: ``queue.Empty``."""
        items = await self._take(1, block, timeout, partition)
        return items[0] if items else None

    async def _get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                        partition: str | None = None) -> list[Any]:
        """Up to ``n_values`` oldest items, removed; waits for at least one as ``get`` (``block=False``: maybe [])."""
        if not isinstance(n_values, int) or n_values < 1:
            raise InvalidError(f"n_values={n_values!r}: ask for at least 1 item")
        return await self._take(n_values, block, timeout, partition)

    async def _take(self, n: int, block: bool, timeout: float | None, partition: str | None) -> list[Any]:
        if timeout is not None and timeout < 0:
            raise InvalidError(f"timeout={timeout!r}: give seconds >= 0, or None to wait as long as it takes")
        key = self._partition(partition)
        got = await self._ask(lambda wait_s: QueueGetMsg(oid=self._oid, partition=key, n=n, wait_s=wait_s),
                              timeout if block else 0.0)
        if got is not None:
            return [pickling.deserialize(p) for p in got[1]]
        if not block:
            return []
        raise queue.Empty(f"no item arrived in the Queue within {timeout:g} s")

    async def _ask(self, ask: Callable[[float | None], QueueWait],
                   timeout_s: float | None) -> tuple[CountReply, list[Payload]] | None:
        """A ``queue_get``/``queue_peek`` (``ask(wait_s)``) that waits on the runtime up to ``timeout_s`` (None: as
        long as it takes), asking again when the runtime's cap on one wait passes first; None if no item came."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait_s = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            reply, payloads = await self._request(ask(wait_s), CountReply)
            if reply.n:
                return reply, payloads
            if deadline is not None and time.monotonic() >= deadline:
                return None

    async def _len(self, *, partition: str | None = None, total: bool = False) -> int:
        """Items in ``partition`` (the default one if None), or in all of them with ``total=True``."""
        reply, _ = await self._request(QueueLenMsg(oid=self._oid, partition=self._partition(partition),
                                                   total=total), CountReply)
        return reply.n

    async def _clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Remove the items of ``partition``, or of every partition with ``all=True``."""
        await self._request(QueueClearMsg(oid=self._oid, partition=self._partition(partition), all=all),
                            EmptyReply)

    def _peek_msg(self, partition: str, after: int, wait_s: float | None) -> QueuePeekMsg:
        return QueuePeekMsg(oid=self._oid, partition=partition, n=100, after=after, wait_s=wait_s)

    async def _iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0) -> AsyncIterator[Any]:
        """The items, oldest first, without removing them; ends once none arrives for ``item_poll_timeout`` s."""
        key, after = self._partition(partition), 0
        while True:
            got = await self._ask(functools.partial(self._peek_msg, key, after), item_poll_timeout)
            if got is None:
                return
            after = got[0].last or after
            for payload in got[1]:
                yield pickling.deserialize(payload)

    def __len__(self) -> int:
        return int(self.len())
