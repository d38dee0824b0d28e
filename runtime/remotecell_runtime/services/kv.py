"""Dict and Queue storage: named and ephemeral stores in SQLite, served from the daemon's event loop.

Keys, values and items are opaque bytes here (the client pickles them; the
daemon never unpickles).  A Dict key arrives as the client's canonical pickle
of the key, one frame, and is indexed as those bytes; a value or queue item
is stored as its payload's frames packed in one blob (``storage.pack``).

Schema: ``stores`` (id, kind 'dict'|'queue', name, owner: the session id of an
ephemeral store, else NULL), ``dict_entries`` (store, key, value; UNIQUE(store,
key), rowid order = insertion order) and ``queue_items`` (seq AUTOINCREMENT,
store, partition, item; FIFO = seq order within a partition).

Writes follow the job store: a transaction opens with the first write of a
loop turn and commits after it, and the replies of that turn go out after the
commit (WAL, ``synchronous=NORMAL``: a runtime crash loses nothing acknowledged).

The ``queue_*`` handlers and the blocking requests that wait for a put are in
``queues.py``; they watch this store (``StoreWatcher``) for deleted stores and
quiet sessions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..pools import Peer
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Frame, Payload
from ..protocol.message import Message
from ..protocol.messages.session import EmptyReply
from ..protocol.messages.stores import (
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
    KvDeleteMsg,
    KvListMsg,
    KvListReply,
    KvOpenMsg,
    KvOpenReply,
)
from ..storage import open_db, pack, unpack
from .base import Handler, Host, Request, Service, error_reply, refusal, with_id

log = logging.getLogger("remotecell.runtime")

MIB = 1024 * 1024
LIMITS = {
    "dict_value_bytes": int(os.environ.get("REMOTECELL_DICT_VALUE_MAX_BYTES", 100 * MIB)),
    "dict_key_bytes": 64 * 1024,
    "queue_item_bytes": int(os.environ.get("REMOTECELL_QUEUE_ITEM_MAX_BYTES", MIB)),
    "partition_chars": 64,
}
MAX_WAIT_S = 50.0  # one blocking request waits at most this long here; the client asks again
PAGE_BYTES = 8 * MIB  # keys()/values()/items() come in pages of about this size
PAGE_ENTRIES = 1000
LIST_MAX = 1000  # kv_list describes at most this many stores
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    owner TEXT,
    created_at REAL NOT NULL,
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS dict_entries (
    id INTEGER PRIMARY KEY,
    store INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    UNIQUE (store, key)
);
CREATE TABLE IF NOT EXISTS queue_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    store INTEGER NOT NULL,
    partition TEXT NOT NULL,
    item BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_order ON queue_items (store, partition, seq);
"""


@dataclass
class Reply:
    """An answer held until the loop turn's writes are committed; ``undo`` runs if it cannot be delivered."""

    peer: Peer
    request_id: Any
    message: Message
    payloads: list[Payload]
    undo: Callable[[], None] | None = None


class StoreWatcher(Protocol):
    """Who holds requests on stores: told when one is deleted, and which sessions still live."""

    def store_deleted(self, oid: int) -> None: ...

    def sessions_gone(self, live_sids: set[str]) -> None: ...


class Stores(Service):
    """The store (transactions, replies after the commit, checks), the ``kv_*`` and the ``dict_*`` handlers."""

    tick_every_s = 5.0

    def __init__(self, host: Host, orphan_grace_s: float) -> None:
        self.host = host
        self.db = open_db(host.state_dir / "kv.db", SCHEMA)
        # Ephemeral stores of sessions gone quiet are deleted; after a restart, their owners get this long
        # to come back first.
        self.sweep_after = time.monotonic() + orphan_grace_s
        self.watchers: list[StoreWatcher] = []  # told of deleted stores and quiet sessions (queue waiters)
        self._replies: list[Reply] = []
        self._flush_handle: asyncio.Handle | None = None

    def handlers(self) -> dict[type[Message], Handler]:
        return {KvOpenMsg: self.on_open, KvDeleteMsg: self.on_delete, KvListMsg: self.on_list,
                DictGetMsg: self.on_dict_get, DictPutMsg: self.on_dict_put, DictPopMsg: self.on_dict_pop,
                DictLenMsg: self.on_dict_len, DictClearMsg: self.on_dict_clear, DictScanMsg: self.on_dict_scan}

    # -- transactions and replies -------------------------------------------------------------

    def write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
            self._schedule_flush()
        return self.db.execute(sql, params)

    def reply(self, req: Request[Any], message: Message, payloads: list[Payload] | None = None,
               undo: Callable[[], None] | None = None) -> None:
        self.answer(Reply(req.peer, req.id, message, payloads or [], undo))

    def answer(self, reply: Reply) -> None:
        self._replies.append(reply)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:  # once per turn of the loop, after everything that turn brought
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Commit this turn's writes, then send its replies (errors instead, if the commit failed)."""
        self._flush_handle = None
        replies, self._replies = self._replies, []
        failure = None
        if self.db.in_transaction:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.exception("the Dict/Queue store could not commit")
                self.db.execute("ROLLBACK")
                failure = f"the runtime could not save the change: {exc}"
        for reply in replies:
            if failure is not None:
                deliver(reply.peer, error_reply(reply.request_id, ErrorName.CONNECTION, failure))
                continue
            delivered = deliver(reply.peer, framing.encode(with_id(reply.message, reply.request_id), reply.payloads))
            if not delivered and reply.undo is not None:
                reply.undo()

    def close(self) -> None:
        self.flush()
        self.db.close()

    # -- checks -------------------------------------------------------------------------------

    def store_of(self, oid: int, kind: str) -> int:
        row = self.db.execute("SELECT kind FROM stores WHERE id = ?", (oid,)).fetchone()
        if row is None or row[0] != kind:
            raise refusal(ErrorName.NOT_FOUND, f"no {kind.capitalize()} with id {oid!r} on this runtime "
                           "(it was deleted, or it was ephemeral and its context ended)")
        return oid

    # -- stores -------------------------------------------------------------------------------

    def on_open(self, req: Request[KvOpenMsg]) -> None:
        """A named store (created if missing and asked to), or a new ephemeral one owned by the session."""
        kind, name = req.msg.kind, req.msg.name
        if kind not in ("dict", "queue"):
            raise refusal(ErrorName.INVALID, f"kind {kind!r} must be 'dict' or 'queue'")
        if req.msg.oid is not None:
            found = self.db.execute("SELECT kind, name, created_at FROM stores WHERE id = ?", (req.msg.oid,)).fetchone()
            self.store_of(req.msg.oid, kind)
            self.reply(req, KvOpenReply(oid=req.msg.oid, limits=LIMITS, name=found[1], created_at=found[2]))
            return
        if name is None:
            now = time.time()
            cur = self.write("INSERT INTO stores (kind, owner, created_at) VALUES (?, ?, ?)", (kind, req.sid, now))
            self.reply(req, KvOpenReply(oid=int(cur.lastrowid or 0), limits=LIMITS, created_at=now))
            return
        if not NAME_RE.fullmatch(name):
            raise refusal(ErrorName.INVALID, f"name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
        row = self.db.execute("SELECT id, created_at FROM stores WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        if row is None and not req.msg.create:
            raise refusal(ErrorName.NOT_FOUND, f"no {kind.capitalize()} named {name!r}: pass create_if_missing=True "
                           "to create it")
        if row is not None and req.msg.exclusive:
            raise refusal(ErrorName.ALREADY_EXISTS, f"a {kind.capitalize()} named {name!r} exists already: pass "
                          "allow_existing=True to accept it")
        oid, created_at = row if row is not None else (None, time.time())
        if oid is None:
            oid = self.write("INSERT INTO stores (kind, name, created_at) VALUES (?, ?, ?)",
                             (kind, name, created_at)).lastrowid
        self.reply(req, KvOpenReply(oid=int(oid or 0), limits=LIMITS, name=name, created_at=created_at))

    def on_list(self, req: Request[KvListMsg]) -> None:
        """Every store's kind, name (None: ephemeral), owner session and size, for the JupyterLab panel.

        Sizes are counts of entries or items: nothing stored is read, let alone unpickled.
        """
        rows = self.db.execute(
            "SELECT id, kind, name, owner, created_at, CASE kind "
            "WHEN 'dict' THEN (SELECT COUNT(*) FROM dict_entries WHERE store = stores.id) "
            "ELSE (SELECT COUNT(*) FROM queue_items WHERE store = stores.id) END "
            "FROM stores ORDER BY kind, name IS NULL, name, id LIMIT ?", (LIST_MAX + 1,)).fetchall()
        stores = [{"id": oid, "kind": kind, "name": name, "ephemeral": owner is not None, "created_at": created_at,
                   "size": size} for oid, kind, name, owner, created_at, size in rows[:LIST_MAX]]
        self.reply(req, KvListReply(stores=stores, truncated=len(rows) > LIST_MAX))

    def on_delete(self, req: Request[KvDeleteMsg]) -> None:
        self._delete(self.store_of(req.msg.oid, req.msg.kind))
        self.reply(req, EmptyReply())

    def _delete(self, oid: int) -> None:
        self.write("DELETE FROM stores WHERE id = ?", (oid,))
        self.write("DELETE FROM dict_entries WHERE store = ?", (oid,))
        self.write("DELETE FROM queue_items WHERE store = ?", (oid,))
        for watcher in self.watchers:
            watcher.store_deleted(oid)

    def tick(self, now: float) -> None:
        """Delete the ephemeral stores, and drop the waiters, of sessions that went quiet."""
        if now < self.sweep_after:
            return
        live_sids = self.host.live_sessions()
        for oid, owner in self.db.execute("SELECT id, owner FROM stores WHERE owner IS NOT NULL").fetchall():
            if owner not in live_sids:
                log.info("deleting ephemeral store %s: its client session %s ended", oid, owner)
                self._delete(int(oid))
        for watcher in self.watchers:
            watcher.sessions_gone(live_sids)

    # -- Dict ---------------------------------------------------------------------------------

    def _entry(self, req: Request[DictGetMsg] | Request[DictPopMsg]) -> tuple[int, bytes, Any]:
        oid = self.store_of(req.msg.oid, "dict")
        key = dict_key(payloads_of(req, "the key", "dict_key_bytes", 1)[0])
        row = self.db.execute("SELECT id, value FROM dict_entries WHERE store = ? AND key = ?", (oid, key)).fetchone()
        return oid, key, row

    def on_dict_get(self, req: Request[DictGetMsg]) -> None:
        """``found``, and the value when found; ``exists_only`` answers without the value (``in``)."""
        _, _, row = self._entry(req)
        if row is None or req.msg.exists_only:
            self.reply(req, DictFoundReply(found=row is not None))
            return
        self.reply(req, DictFoundReply(found=True), [Payload(unpack(row[1]))])

    def on_dict_pop(self, req: Request[DictPopMsg]) -> None:
        _, _, row = self._entry(req)
        if row is None:
            self.reply(req, DictFoundReply(found=False))
            return
        self.write("DELETE FROM dict_entries WHERE id = ?", (row[0],))
        self.reply(req, DictFoundReply(found=True), [Payload(unpack(row[1]))])

    def on_dict_put(self, req: Request[DictPutMsg]) -> None:
        """Payloads key, value, key, value, ...; ``skip_if_exists`` keeps values already there."""
        oid = self.store_of(req.msg.oid, "dict")
        payloads = req.payloads
        if not payloads or len(payloads) % 2:
            raise refusal(ErrorName.INVALID, "dict_put needs payloads in pairs: key, value, key, value, ...")
        keys = [dict_key(p) for p in payloads[0::2]]
        values = _within(payloads[1::2], "a Dict value", "dict_value_bytes")
        conflict = "DO NOTHING" if req.msg.skip_if_exists else "DO UPDATE SET value = excluded.value"
        written = 0
        for key, value in zip(keys, values, strict=True):
            written += self.write(f"INSERT INTO dict_entries (store, key, value) VALUES (?, ?, ?) "
                                   f"ON CONFLICT (store, key) {conflict}", (oid, key, pack(value.frames))).rowcount
        self.reply(req, DictPutReply(written=written))

    def on_dict_len(self, req: Request[DictLenMsg]) -> None:
        oid = self.store_of(req.msg.oid, "dict")
        (n,) = self.db.execute("SELECT COUNT(*) FROM dict_entries WHERE store = ?", (oid,)).fetchone()
        self.reply(req, CountReply(n=n))

    def on_dict_clear(self, req: Request[DictClearMsg]) -> None:
        self.write("DELETE FROM dict_entries WHERE store = ?", (self.store_of(req.msg.oid, "dict"),))
        self.reply(req, EmptyReply())

    def on_dict_scan(self, req: Request[DictScanMsg]) -> None:
        """One page of keys, values or both (``what``) after entry ``after``; ``next`` is None on the last page."""
        oid, after, what = self.store_of(req.msg.oid, "dict"), req.msg.after or 0, req.msg.what
        if what not in ("keys", "values", "items"):
            raise refusal(ErrorName.INVALID, f"dict_scan: what={what!r} must be keys, values or items")
        rows = self.db.execute("SELECT id, key, value FROM dict_entries WHERE store = ? AND id > ? ORDER BY id "
                               "LIMIT ?", (oid, after, PAGE_ENTRIES + 1))
        payloads: list[Payload] = []
        size, last, more = 0, after, False
        for rowid, key, value in rows:
            if size >= PAGE_BYTES or len(payloads) >= PAGE_ENTRIES * 2:
                more = True
                break
            if what != "values":
                payloads.append(Payload([key]))
            if what != "keys":
                payloads.append(Payload(unpack(value)))
            size, last = size + len(key) + len(value), rowid
        self.reply(req, DictScanReply(next=last if more else None), payloads)


def payloads_of(req: Request[Any], what: str, limit: str, count: int | None = None) -> list[Payload]:
    """The request's payloads, each one inline and within ``LIMITS[limit]`` bytes."""
    if count is not None and len(req.payloads) != count:
        raise refusal(ErrorName.INVALID, f"{req.msg.TYPE} needs {count} payload(s) ({what}), "
                       f"got {len(req.payloads)}")
    return _within(req.payloads, what, limit)

def dict_key(payload: Payload) -> bytes:
    if len(payload.frames) != 1:  # sizes are checked with the other payloads
        raise refusal(ErrorName.INVALID, "a Dict key travels as one frame: its canonical pickle")
    return bytes(framing.buffer_of(payload.frames[0]))

def partition_of(partition: str | None) -> str:
    partition = partition or ""
    if len(partition) > LIMITS["partition_chars"]:
        raise refusal(ErrorName.INVALID, f"partition {partition!r}: give a string of at most "
                       f"{LIMITS['partition_chars']} characters")
    return partition


def _within(payloads: list[Payload], what: str, limit: str) -> list[Payload]:
    """``payloads``, if each is inline (no shared memory) and within ``LIMITS[limit]`` bytes."""
    for payload in payloads:
        if payload.shm:
            raise refusal(ErrorName.INVALID, "Dict and Queue data travel inline, not through shared memory")
        if payload.nbytes > LIMITS[limit]:
            raise refusal(ErrorName.PAYLOAD_TOO_LARGE,
                           f"{what} of {payload.nbytes} bytes is over this runtime's limit "
                           f"of {LIMITS[limit]} bytes ({limit})")
    return payloads


def deliver(peer: Peer, frames: list[Frame]) -> bool:
    """Send to a client; False when it is gone (its listener says so)."""
    listener, identity = peer
    return bool(listener.send(identity, frames))
