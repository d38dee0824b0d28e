"""Queues: the ``queue_*`` handlers on the Dict/Queue store, and the blocking requests that wait for a put.

A blocking ``queue_get`` (or ``queue_peek``) waits here, not in the client: the
request joins the waiters of its (queue, partition) that a ``queue_put`` there
wakes, oldest first, and a timer answers ``n: 0`` at its deadline.  One request
waits at most ``MAX_WAIT_S`` (the client asks again); ``kv_cancel`` forgets
waiting requests; a waiter whose session went quiet is dropped, one whose queue
is deleted is answered ``not_found``.  Items taken by a peer that is gone go
back to the queue with their places in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..pools import Peer
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.message import Message
from ..protocol.messages.session import EmptyReply
from ..protocol.messages.stores import (
    CountReply,
    KvCancelMsg,
    QueueClearMsg,
    QueueGetMsg,
    QueueLenMsg,
    QueuePeekMsg,
    QueuePutMsg,
    QueueWait,
)
from ..storage import pack, unpack
from .base import Handler, Request, Service, error_reply, refusal
from .kv import MAX_WAIT_S, Reply, Stores, deliver, partition_of, payloads_of

Key = tuple[int, str]  # (queue id, partition)


@dataclass
class Waiter:
    """A blocking queue request: ``take`` answers it if its partition has what it wants."""

    peer: Peer
    request_id: Any
    sid: str
    take: Callable[[], bool]
    timer: asyncio.TimerHandle | None = None


class Queues(Service):
    def __init__(self, kv: Stores) -> None:
        self.kv = kv
        self.waiters: dict[Key, list[Waiter]] = {}
        kv.watchers.append(self)

    def handlers(self) -> dict[type[Message], Handler]:
        return {QueuePutMsg: self.on_queue_put, QueueGetMsg: self.on_queue_get, QueuePeekMsg: self.on_queue_peek,
                QueueLenMsg: self.on_queue_len, QueueClearMsg: self.on_queue_clear, KvCancelMsg: self.on_cancel}

    def on_queue_put(self, req: Request[QueuePutMsg]) -> None:
        oid, partition = self.kv.store_of(req.msg.oid, "queue"), partition_of(req.msg.partition)
        items = payloads_of(req, "a Queue item", "queue_item_bytes")
        for item in items:
            self.kv.write("INSERT INTO queue_items (store, partition, item) VALUES (?, ?, ?)",
                        (oid, partition, pack(item.frames)))
        self.kv.reply(req, CountReply(n=len(items)))
        self._wake((oid, partition))

    def on_queue_get(self, req: Request[QueueGetMsg]) -> None:
        """Take up to ``n`` items, oldest first; with none there, wait up to ``wait_s`` for a put."""
        oid, partition, n = self._where(req.msg)
        self._serve(req, (oid, partition), lambda: self._take(req, oid, partition, n))

    def on_queue_peek(self, req: Request[QueuePeekMsg]) -> None:
        """Up to ``n`` items after position ``after``, left in the queue (``Queue.iterate``); waits as a get."""
        oid, partition, n = self._where(req.msg)
        after = req.msg.after or 0
        self._serve(req, (oid, partition), lambda: self._peek(req, oid, partition, n, after))

    def _where(self, msg: QueueWait) -> tuple[int, str, int]:
        if msg.n < 1:
            raise refusal(ErrorName.INVALID, f"n={msg.n!r}: ask for at least 1 item")
        return self.kv.store_of(msg.oid, "queue"), partition_of(msg.partition), msg.n

    def _rows(self, oid: int, partition: str, after: int, n: int) -> list[tuple[int, bytes]]:
        return self.kv.db.execute("SELECT seq, item FROM queue_items WHERE store = ? AND partition = ? AND seq > ? "
                               "ORDER BY seq LIMIT ?", (oid, partition, after, n)).fetchall()

    def _take(self, req: Request[QueueGetMsg], oid: int, partition: str, n: int) -> bool:
        rows = self._rows(oid, partition, 0, n)
        if not rows:
            return False
        self.kv.write("DELETE FROM queue_items WHERE store = ? AND partition = ? AND seq <= ?",
                    (oid, partition, rows[-1][0]))

        def put_back() -> None:  # its asker is gone: the items keep their places
            for seq, item in rows:
                self.kv.write("INSERT INTO queue_items (seq, store, partition, item) VALUES (?, ?, ?, ?)",
                            (seq, oid, partition, item))
            self._wake((oid, partition))

        self.kv.reply(req, CountReply(n=len(rows)), [Payload(unpack(item)) for _, item in rows], undo=put_back)
        return True

    def _peek(self, req: Request[QueuePeekMsg], oid: int, partition: str, n: int, after: int) -> bool:
        rows = self._rows(oid, partition, after, n)
        if not rows:
            return False
        self.kv.reply(req, CountReply(n=len(rows), last=rows[-1][0]), [Payload(unpack(item)) for _, item in rows])
        return True

    def _serve(self, req: Request[QueueGetMsg] | Request[QueuePeekMsg], key: Key, take: Callable[[], bool]) -> None:
        """Answer now if ``take`` can; else wait for a put, at most ``wait_s`` (capped at ``MAX_WAIT_S``)."""
        wait_s = req.msg.wait_s
        wait_s = MAX_WAIT_S if wait_s is None else min(max(wait_s, 0.0), MAX_WAIT_S)
        if take():
            return
        if wait_s <= 0:
            self.kv.reply(req, CountReply(n=0))
            return
        waiter = Waiter(req.peer, req.id, req.sid, take)
        waiter.timer = asyncio.get_running_loop().call_later(wait_s, self._timed_out, key, waiter)
        self.waiters.setdefault(key, []).append(waiter)

    def _timed_out(self, key: Key, waiter: Waiter) -> None:
        self._unwait(key, waiter)
        self.kv.answer(Reply(waiter.peer, waiter.request_id, CountReply(n=0), []))

    def _unwait(self, key: Key, waiter: Waiter) -> None:
        waiters = self.waiters.get(key, [])
        if waiter in waiters:
            waiters.remove(waiter)
            self._drop_waiter(waiter)
        if not waiters:
            self.waiters.pop(key, None)

    @staticmethod
    def _drop_waiter(waiter: Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()

    def _wake(self, key: Key) -> None:
        """Items arrived in a partition: answer its waiters, oldest first, while there are items for them."""
        for waiter in list(self.waiters.get(key, [])):
            if waiter.take():
                self._unwait(key, waiter)

    def on_cancel(self, req: Request[KvCancelMsg]) -> None:
        """The client stopped waiting (Ctrl-C, a cancelled task): forget its waiting requests ``ids``."""
        ids = set(req.msg.ids)
        for key, waiters in list(self.waiters.items()):
            for waiter in [w for w in waiters if w.peer == req.peer and w.request_id in ids]:
                self._unwait(key, waiter)

    def on_queue_len(self, req: Request[QueueLenMsg]) -> None:
        oid = self.kv.store_of(req.msg.oid, "queue")
        if req.msg.total:
            row = self.kv.db.execute("SELECT COUNT(*) FROM queue_items WHERE store = ?", (oid,)).fetchone()
        else:
            row = self.kv.db.execute("SELECT COUNT(*) FROM queue_items WHERE store = ? AND partition = ?",
                                  (oid, partition_of(req.msg.partition))).fetchone()
        self.kv.reply(req, CountReply(n=row[0]))

    def on_queue_clear(self, req: Request[QueueClearMsg]) -> None:
        oid = self.kv.store_of(req.msg.oid, "queue")
        if req.msg.all:
            self.kv.write("DELETE FROM queue_items WHERE store = ?", (oid,))
        else:
            self.kv.write("DELETE FROM queue_items WHERE store = ? AND partition = ?",
                          (oid, partition_of(req.msg.partition)))
        self.kv.reply(req, EmptyReply())

    def store_deleted(self, oid: int) -> None:
        for key in [k for k in self.waiters if k[0] == oid]:
            for waiter in self.waiters.pop(key):
                self._drop_waiter(waiter)
                deliver(waiter.peer, error_reply(waiter.request_id, ErrorName.NOT_FOUND,
                                               "the Queue was deleted while this request waited"))

    def sessions_gone(self, live_sids: set[str]) -> None:
        for key, waiters in list(self.waiters.items()):
            for waiter in [w for w in waiters if w.sid not in live_sids]:
                self._timed_out(key, waiter)

    def stats(self) -> dict[str, int]:
        """For ``status``: the blocking queue requests waiting now."""
        return {"waiters": sum(len(w) for w in self.waiters.values())}
