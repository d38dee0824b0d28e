"""Dict and Queue: opening and deleting stores, their entries and items (payloads the daemon stores unread)."""

from __future__ import annotations

from typing import Any

from ..message import Message, message, wire


@message("kv_open")
class KvOpenMsg(Message):
    """A named store (made if missing and ``create``), the store of id ``oid``, or, with neither, a new
    ephemeral one of the session."""

    kind: str  # "dict" or "queue"
    name: str | None = None
    create: bool = False
    exclusive: bool = False  # with ``create``: refuse (AlreadyExistsError) when the name is taken
    oid: int | None = None


@message("reply")
class KvOpenReply(Message):
    oid: int
    limits: dict[str, int]
    name: str | None = None
    created_at: float | None = None


@message("kv_delete")
class KvDeleteMsg(Message):
    oid: int
    kind: str


@message("kv_list")
class KvListMsg(Message):
    pass


@message("reply")
class KvListReply(Message):
    stores: list[dict[str, Any]]  # id, kind, name, ephemeral, created_at, size
    truncated: bool


@message("kv_cancel")
class KvCancelMsg(Message):
    """The client stopped waiting: forget its waiting requests ``ids``."""

    ids: list[str] = wire(factory=list)


@message()
class StoreRef(Message):
    oid: int  # the store's id, from kv_open


@message("dict_get")
class DictGetMsg(StoreRef):
    """Payload: the key; ``exists_only`` answers without the value (``in``)."""

    exists_only: bool = False


@message("dict_pop")
class DictPopMsg(StoreRef):
    pass


@message("reply")
class DictFoundReply(Message):
    """Whether the key was there; its value, when asked for, is the one payload."""

    found: bool


@message("dict_put")
class DictPutMsg(StoreRef):
    """Payloads: key, value, key, value, ...; ``skip_if_exists`` keeps values already there."""

    skip_if_exists: bool = False


@message("reply")
class DictPutReply(Message):
    written: int


@message("dict_len")
class DictLenMsg(StoreRef):
    pass


@message("dict_clear")
class DictClearMsg(StoreRef):
    pass


@message("dict_scan")
class DictScanMsg(StoreRef):
    """One page of keys, values or both (``what``) after entry ``after``."""

    what: str
    after: int | None = None


@message("reply")
class DictScanReply(Message):
    next: int | None  # None on the last page


@message()
class PartitionRef(StoreRef):
    partition: str | None = None  # None or "": the default partition


@message("queue_put")
class QueuePutMsg(PartitionRef):
    """Payloads: the items."""


@message()
class QueueWait(PartitionRef):
    n: int = 1
    wait_s: float | None = 0.0  # None: as long as the runtime allows


@message("queue_get")
class QueueGetMsg(QueueWait):
    """Take up to ``n`` items, oldest first; with none there, wait up to ``wait_s`` for a put."""


@message("queue_peek")
class QueuePeekMsg(QueueWait):
    """Up to ``n`` items after position ``after``, left in the queue."""

    after: int | None = None


@message("reply")
class CountReply(Message):
    """How many: items put, taken or counted, entries counted; ``last``: the position of a peek's last item."""

    n: int
    last: int | None = None


@message("queue_len")
class QueueLenMsg(PartitionRef):
    total: bool = False  # every partition's items


@message("queue_clear")
class QueueClearMsg(PartitionRef):
    all: bool = False  # every partition
