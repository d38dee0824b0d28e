"""Spawned calls: the job store (SQLite, WAL) and the life of a call that outlives its caller.

A spawned input is a row, committed before the caller hears it was accepted.
Its result (the container's header and frames, opaque here) is written when it
ends and kept ``retention_s`` (7 days by default); after that the row stays as
a tombstone so that ``get`` can say the output expired rather than "not found".

Writes are grouped: everything the daemon reads from a socket in one go goes in
one transaction (``SpawnedCalls.drained``; writes made elsewhere, by timers, at
the end of that turn of the event loop), and the replies that depend on it go
out after the commit.
WAL with ``synchronous=NORMAL`` survives a crash of the runtime (not a power
loss of the host).

A runtime restart loses nothing: unfinished rows are loaded at start and wait
for their function to be registered again (the client re-registers its app
when it sees the new runtime); whatever is not claimed within ``orphan_grace_s``
fails with an error saying its app is gone.  Spawned calls run at least once:
one that was running when the runtime died runs again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..pools import Input, Peer, Pool, Result, cancelled_result, error_result
from ..protocol import framing
from ..protocol.errors import ErrorName
from ..protocol.framing import Payload
from ..protocol.message import Message
from ..protocol.messages.jobs import (
    CallCancelMsg,
    CallCancelReply,
    CallGetMsg,
    CallLogsMsg,
    CallLogsReply,
    CallsRecentMsg,
    CallsRecentReply,
    CallStatusMsg,
    CallStatusReply,
    GroupStatusReply,
    PendingReply,
    SpawnEntry,
    SpawnMsg,
    SpawnReply,
)
from ..storage import Checkpointer, open_db, pack, unpack
from .base import Handler, Host, Request, Service, error_reply, refusal, with_id
from .functions import JOB_PEER, Functions

log = logging.getLogger("remotecell.runtime")

RETENTION_S = 7 * 24 * 3600.0
LOG_TAIL_BYTES = 1 << 20  # what a call's logs keep
FINAL_STATES = ("succeeded", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    group_id TEXT,
    idx INTEGER,
    fn_key TEXT NOT NULL,
    function TEXT NOT NULL,
    method TEXT,
    state TEXT NOT NULL,
    args BLOB,
    result BLOB,
    error_type TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    logs TEXT,
    created_at REAL NOT NULL,
    finished_at REAL,
    expires_at REAL
);
DROP INDEX IF EXISTS calls_state;
DROP INDEX IF EXISTS calls_group;
DROP INDEX IF EXISTS calls_expiry;
CREATE INDEX IF NOT EXISTS calls_of_group ON calls (group_id, idx) WHERE group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS calls_expiring ON calls (expires_at) WHERE expires_at IS NOT NULL;
DROP INDEX IF EXISTS calls_created;
"""
# A plain spawn's INSERT writes the table and its id index, nothing else: the group and expiry
# indexes are partial (``group_id = ?`` and ``expires_at < ?`` imply NOT NULL, so SQLite still uses
# them there), and "newest first" is the rowid order (rows are inserted as calls are spawned, and
# only old tombstones are ever deleted), not an index on created_at. Each index a commit touches is
# one more page written to the WAL per spawn.
INSERT_CALL = ("INSERT INTO calls (id, group_id, idx, fn_key, function, method, state, args, created_at) "
               "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?) ON CONFLICT (id) DO NOTHING")
SAVE_RESULT = ("UPDATE calls SET state = ?, result = ?, error_type = ?, attempts = ?, logs = ?, args = NULL, "
               "finished_at = ?, expires_at = ? WHERE id = ?")
CHECKPOINT_EVERY_S = 0.02  # the background checkpoint's pace while spawns come in (storage.Checkpointer)
CHECKPOINT_BACKSTOP_PAGES = 4000  # the committing thread's own checkpoint, should that one fall behind
RECENT_MAX = 500  # calls_recent lists at most this many
TOMBSTONE_S = 30 * 24 * 3600.0  # how long an expired call is still known as expired (then: not found)


Changed = Callable[[int | None], None]  # told how many rows a statement changed once committed (None: it failed)


@dataclass(slots=True)
class Job:
    """A spawned call the runtime is working on (its row says the rest)."""

    id: str
    fn_key: str
    function: str
    method: str | None
    payload: Payload
    group_id: str | None = None
    index: int | None = None
    created_at: float = field(default_factory=time.time)
    logs: list[str] = field(default_factory=list)
    log_bytes: int = 0
    waiters: list[tuple[Peer, str]] = field(default_factory=list)  # get requests: (peer, request id)
    ended: bool = False  # its result is being written


class JobStore:
    """The SQLite side: rows in, rows out; no sockets, no event loop."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path, SCHEMA)
        self.db.row_factory = sqlite3.Row
        # a spawn is a commit: thousands a second, so the WAL fills in well under a second
        self.checkpointer = Checkpointer(self.db, path, CHECKPOINT_EVERY_S, CHECKPOINT_BACKSTOP_PAGES)

    def close(self) -> None:
        self.checkpointer.stop()
        self.db.close()

    def write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Run ``statements`` in one transaction; how many rows each one changed."""
        if len(statements) == 1:  # a transaction of its own in autocommit mode: no BEGIN and COMMIT to run
            sql, params = statements[0]
            changed = [self.db.execute(sql, params).rowcount]
        else:
            changed = self._write_many(statements)
        self.checkpointer.wake()
        return changed

    def _write_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        self.db.execute("BEGIN")
        try:
            changed = [self.db.execute(sql, params).rowcount for sql, params in statements]
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return changed

    def row(self, call_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()

    def known(self, call_id: str) -> sqlite3.Row:
        """The row of ``call_id``, or a refusal: no such call."""
        row = self.row(call_id)
        if row is None:
            raise refusal(ErrorName.NOT_FOUND, f"no spawned call with id {call_id!r} on this runtime")
        return row

    def group_ids(self, group_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM calls WHERE group_id = ? ORDER BY idx", (group_id,))]

    def unfinished(self) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM calls WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired') "
            "ORDER BY rowid").fetchall()

    def group_states(self, group_id: str) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM calls WHERE group_id = ? GROUP BY state", (group_id,))
        return {str(state): int(n) for state, n in rows}

    def recent(self, limit: int, since: float | None = None) -> list[sqlite3.Row]:
        """The ``limit`` most recently spawned calls, newest first, none made before ``since`` (no arguments,
        results or logs).

        Rows are inserted as calls are made, so the rowid order is the time order: the scan stops at the first
        row older than ``since`` rather than reading the whole table (there is no index on created_at).
        """
        rows: list[sqlite3.Row] = []
        for row in self.db.execute(
                "SELECT id, group_id, function, state, attempts, error_type, created_at, finished_at FROM calls "
                "ORDER BY rowid DESC"):
            if len(rows) >= limit or (since is not None and row["created_at"] < since):
                break
            rows.append(row)
        return rows

    def expire(self, now_s: float) -> int:
        """Drop the results of calls past their retention; forget them entirely much later."""
        self.db.execute("DELETE FROM calls WHERE expires_at < ? AND state = 'expired'", (now_s - TOMBSTONE_S,))
        cur = self.db.execute(
            "UPDATE calls SET state = 'expired', result = NULL, args = NULL, logs = NULL "
            "WHERE expires_at < ? AND state != 'expired'", (now_s,))
        return cur.rowcount


class GroupCommit:
    """Writes to the job store, many to a commit: a statement waits for the next one, its callbacks after it.

    The daemon flushes once it has drained a socket (``SpawnedCalls.drained``); for writes made
    elsewhere (a timer's), when the host is not ``reading``, a flush is scheduled on the loop.
    None is scheduled for a handler's writes: a cancelled handle still costs the loop a turn.
    """

    def __init__(self, store: JobStore, host: Host) -> None:
        self.store = store
        self.host = host
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._changed: list[Changed | None] = []  # per pending statement: told its row count
        self._after_commit: list[Callable[[Exception | None], None]] = []
        self._flush_handle: asyncio.Handle | None = None

    def write(self, sql: str, params: tuple[Any, ...], changed: Changed | None = None) -> None:
        """Queue a statement for the next commit; once it is done, ``changed(rows)`` is told how many rows it
        changed (None: the commit failed)."""
        self._pending.append((sql, params))
        self._changed.append(changed)
        self._schedule_flush()

    def then(self, callback: Callable[[Exception | None], None]) -> None:
        """Run ``callback`` after the writes so far are committed (with the error if they failed)."""
        self._after_commit.append(callback)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self.host.reading:  # a handler's writes: drained() flushes
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    @property
    def unwritten(self) -> bool:
        return bool(self._pending or self._after_commit)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        statements, self._pending = self._pending, []
        told, self._changed = self._changed, []
        callbacks, self._after_commit = self._after_commit, []
        error: Exception | None = None
        if statements:
            counts: Sequence[int | None]
            try:
                counts = self.store.write(statements)
            except sqlite3.Error as exc:
                log.exception("the job store could not write %d changes", len(statements))
                error, counts = exc, [None] * len(statements)
            for changed, count in zip(told, counts, strict=True):
                if changed is not None:
                    changed(count)
        for callback in callbacks:
            callback(error)


class Jobs:
    """Spawned calls on the daemon's event loop: accept, run through pools, answer get/status/cancel/logs."""

    def __init__(self, functions: Functions, state_dir: Path, retention_s: float = RETENTION_S,
                 orphan_grace_s: float = 30.0) -> None:
        self.functions = functions
        functions.job_sink = self  # spawned inputs' results and output come here
        self.store = JobStore(state_dir / "jobs.db")
        self.retention_s = retention_s
        self.live: dict[str, Job] = {}
        self.groups: dict[str, set[str]] = {}  # spawn_map group -> its live calls
        self.orphans: dict[str, list[Job]] = {}  # fn key -> jobs that wait for their function after a restart
        self.orphan_deadline = time.monotonic() + orphan_grace_s
        self.closing = False
        self.commits = GroupCommit(self.store, functions.host)
        self._load_unfinished()

    # -- spawning -----------------------------------------------------------------------------

    def submit(self, pool: Pool, entries: list[tuple[SpawnEntry, list[Payload]]], method: str | None,
               then: Callable[[Exception | None], None]) -> None:
        """Write the new calls; once committed, ``then(error)``, and start them unless the write failed."""
        # a resent request's calls are live already (one that ended is known to the store: see _inserted)
        fresh = [self._insert(pool, entry, payloads[0], method) for entry, payloads in entries
                 if entry.id not in self.live]
        self.commits.then(functools.partial(self._accepted, pool, fresh, then))

    def _insert(self, pool: Pool, entry: SpawnEntry, payload: Payload, method: str | None) -> Job:
        job = Job(entry.id, pool.fn.key, pool.fn.name, method, payload, entry.group, entry.index)
        self._track(job)
        self.commits.write(INSERT_CALL, (job.id, job.group_id, job.index, job.fn_key, job.function, method,
                                         pack(payload.frames), job.created_at), functools.partial(self._inserted, job))
        return job

    def _inserted(self, job: Job, rows: int | None) -> None:
        """No row inserted: the store had the call already, ended (a resend after a restart): it does not run
        again; or the commit failed (``_accepted`` says so)."""
        if not rows:
            self._untrack(job)

    def _accepted(self, pool: Pool, fresh: list[Job], then: Callable[[Exception | None], None],
                  error: Exception | None) -> None:
        then(error)
        if error is None:
            self._start(pool, [job for job in fresh if self.live.get(job.id) is job])

    def _track(self, job: Job) -> None:
        self.live[job.id] = job
        if job.group_id is not None:
            self.groups.setdefault(job.group_id, set()).add(job.id)

    def _untrack(self, job: Job) -> None:
        self.live.pop(job.id, None)
        members = self.groups.get(job.group_id or "")
        if members is not None:
            members.discard(job.id)
            if not members:
                del self.groups[job.group_id or ""]

    def _start(self, pool: Pool, jobs: list[Job]) -> None:
        """Run ``jobs`` (tracked in ``live``) on ``pool``."""
        inputs = []
        for job in jobs:
            self.functions.input_pool[job.id] = pool
            inputs.append(Input(job.id, JOB_PEER, job.payload, None, job.method, False))
        pool.submit(*inputs, soon=True)  # in a burst, they go to the containers together

    # -- results and output -------------------------------------------------------------------

    def on_result(self, result: Result) -> None:
        entry = result.entry
        job = self.live.get(entry.id)
        if job is None or job.ended or self.closing:  # shutting down: the row stays, the call runs after a restart
            return
        job.ended = True
        header = entry.fields()  # saved as a ``result`` message: answered to each get under its id
        header.pop("np", None)
        header["t"] = "result"
        payloads = result.payloads
        now = time.time()
        error_type = entry.error and entry.error.type
        self.commits.write(SAVE_RESULT, (_state_of(result), pack(framing.encode(header, payloads)), error_type,
                                         entry.attempt, "".join(job.logs), now, now + self.retention_s, job.id),
                           functools.partial(self._ended, job, header, payloads))

    def _ended(self, job: Job, header: dict[str, Any], payloads: list[Payload], rows: int | None) -> None:
        """``job``'s result was written (or could not be): its waiters hear of it."""
        self._untrack(job)
        waiters, job.waiters = job.waiters, []
        for peer, request_id in waiters:
            self.functions.send_peer(peer, framing.encode(dict(header, id=request_id), payloads))

    def on_output(self, call_id: str, text: str) -> None:
        job = self.live.get(call_id)
        if job is None:
            return
        job.logs.append(text)
        job.log_bytes += len(text)
        while job.log_bytes > LOG_TAIL_BYTES and len(job.logs) > 1:
            job.log_bytes -= len(job.logs.pop(0))

    # -- get, status, cancel, logs ------------------------------------------------------------

    def get(self, peer: Peer, request_id: str, call_id: str, timeout_s: float) -> PendingReply | None:
        """Answer with the result now, or when it comes, or ``pending`` after ``timeout_s``."""
        job = self.live.get(call_id)
        if job is not None:
            if timeout_s <= 0:
                return PendingReply()
            job.waiters.append((peer, request_id))
            asyncio.get_running_loop().call_later(timeout_s, self._get_timed_out, job, peer, request_id)
            return None
        row = self._finished_row(call_id)
        header, payloads = framing.decode(unpack(row["result"]))
        self.functions.send_peer(peer, framing.encode(dict(header, t="result", id=request_id), payloads))
        return None

    def _get_timed_out(self, job: Job, peer: Peer, request_id: str) -> None:
        if (peer, request_id) in job.waiters:
            job.waiters.remove((peer, request_id))
            self.functions.send_peer(peer, framing.encode(with_id(PendingReply(), request_id)))

    def _finished_row(self, call_id: str) -> sqlite3.Row:
        row = self.store.known(call_id)
        if row["state"] == "expired":
            raise refusal(ErrorName.OUTPUT_EXPIRED,
                           f"the output of call {call_id} expired: results are kept {self.retention_s:g} s")
        return row

    def status(self, call_id: str) -> dict[str, Any]:
        job = self.live.get(call_id)
        if job is not None:
            return self._live_status(job)
        row = self.store.known(call_id)
        return {"id": call_id, "function": row["function"], "state": row["state"], "attempts": row["attempts"],
                "error_type": row["error_type"], "created_at": row["created_at"],
                "finished_at": row["finished_at"]}

    def _live_status(self, job: Job) -> dict[str, Any]:
        out = {"id": job.id, "function": job.function, "created_at": job.created_at, "attempts": 1}
        pool = self.functions.input_pool.get(job.id)
        inp = pool.inputs.get(job.id) if pool is not None else None
        if pool is None or inp is None:
            return dict(out, state="queued", reason="waiting for its app to be registered again after a restart")
        out["attempts"] = inp.attempt
        if inp.container is not None:
            return dict(out, state="running", container=inp.container.id)
        return dict(out, state="queued", reason=pool.queue_reason())

    def recent(self, limit: int, since: float | None = None) -> list[dict[str, Any]]:
        """The latest spawned calls (made at ``since`` or later), newest first: running ones with their container,
        ended ones with their end."""
        calls = []
        for row in self.store.recent(min(limit, RECENT_MAX), since):
            job = self.live.get(row["id"])
            if job is not None:  # the row says 'queued' until it ends: the pools know better
                calls.append(dict(self._live_status(job), group=job.group_id))
                continue
            calls.append({"id": row["id"], "group": row["group_id"], "function": row["function"],
                          "state": row["state"], "attempts": row["attempts"], "error_type": row["error_type"],
                          "created_at": row["created_at"], "finished_at": row["finished_at"]})
        return calls

    def group_status(self, group_id: str) -> dict[str, int]:
        counts = self.store.group_states(group_id)
        live = [self.live[call_id] for call_id in self.groups.get(group_id, ())]
        running = sum(1 for j in live if self._live_status(j)["state"] == "running")
        counts.pop("queued", None)
        counts.update(queued=len(live) - running, running=running)
        return {k: v for k, v in counts.items() if v}

    def cancel(self, call_ids: list[str]) -> int:
        cancelled = 0
        for call_id in call_ids:
            pool = self.functions.input_pool.get(call_id)
            if pool is not None:
                pool.cancel(call_id)
                cancelled += 1
            elif call_id in self.live:  # an orphan after a restart
                self.on_result(cancelled_result(call_id))
                self._forget_orphan(call_id)
                cancelled += 1
        return cancelled

    def logs(self, call_id: str) -> str:
        job = self.live.get(call_id)
        if job is not None:
            return "".join(job.logs)
        row = self._finished_row(call_id)
        return str(row["logs"] or "")

    # -- restarts -----------------------------------------------------------------------------

    def _load_unfinished(self) -> None:
        for row in self.store.unfinished():
            payload = Payload(unpack(row["args"]))
            job = Job(row["id"], row["fn_key"], row["function"], row["method"], payload, row["group_id"],
                      row["idx"], row["created_at"])
            self._track(job)
            self.orphans.setdefault(job.fn_key, []).append(job)
        if self.live:
            log.info("%d spawned calls were unfinished at the last stop; they run again once their apps are back",
                     len(self.live))

    def adopt(self, pool: Pool) -> None:
        """A function was registered: run the orphans that wait for it."""
        jobs = self.orphans.pop(pool.fn.key, [])
        if jobs:
            log.info("resuming %d spawned calls of %s", len(jobs), pool.fn.name)
            self._start(pool, jobs)

    def _forget_orphan(self, call_id: str) -> None:
        for key, jobs in list(self.orphans.items()):
            self.orphans[key] = [j for j in jobs if j.id != call_id]

    def tick(self, now: float) -> None:
        """Fail orphans whose app did not come back; expire old results (called every few seconds)."""
        if self.orphans and now > self.orphan_deadline:
            orphans, self.orphans = self.orphans, {}
            for jobs in orphans.values():
                for job in jobs:
                    msg = (f"spawned call {job.id} of {job.function} could not run again after the runtime "
                           "restarted: its app is gone (the client that ran it did not come back). Spawn it again")
                    self.on_result(error_result(job.id, ErrorName.CANCELLED, msg))
        expired = self.store.expire(time.time())
        if expired:
            log.info("expired the outputs of %d spawned calls", expired)

    def close(self) -> None:
        self.commits.flush()
        self.closing = True
        self.store.close()


def _state_of(result: Result) -> str:
    if result.status == "ok":
        return "succeeded"
    error = result.entry.error
    if result.status == "cancelled" or (error is not None and error.type == ErrorName.CANCELLED):
        return "cancelled"
    return "failed"


class SpawnedCalls(Service):
    """The spawned-call messages: ``spawn`` saves calls to the job store and runs them; the rest ask about them."""

    tick_every_s = 5.0

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs

    def handlers(self) -> dict[type[Message], Handler]:
        return {SpawnMsg: self.on_spawn, CallGetMsg: self.on_get, CallStatusMsg: self.on_status,
                CallCancelMsg: self.on_cancel, CallLogsMsg: self.on_logs, CallsRecentMsg: self.on_recent}

    def on_spawn(self, req: Request[SpawnMsg]) -> None:
        """Spawned calls (one payload each): saved to the job store, then run."""
        pool = self.jobs.functions.live_pool(req.msg.fid)
        entries = framing.pair(req.msg.entries, req.payloads)
        if any(len(payloads) != 1 or payloads[0].shm for _, payloads in entries):
            raise refusal(ErrorName.INVALID,
                          "a spawned call needs one payload, its arguments, without shared memory")
        answer = functools.partial(self._answer, req.peer, req.id, len(entries))
        self.jobs.submit(pool, entries, req.msg.method, answer)  # calls already known are not run twice

    def _answer(self, peer: Peer, request_id: Any, accepted: int, error: Exception | None) -> None:
        """The reply to a ``spawn``, once its calls are saved (or could not be)."""
        if error is not None:
            self.jobs.functions.send_peer(peer, error_reply(request_id, ErrorName.CONNECTION,
                                                            f"the runtime could not save the calls: {error}"))
        else:
            self.jobs.functions.send_peer(peer, framing.encode(with_id(SpawnReply(accepted=accepted), request_id)))

    def on_get(self, req: Request[CallGetMsg]) -> PendingReply | None:
        timeout_s = min(max(req.msg.timeout_s, 0.0), 60.0)
        return self.jobs.get(req.peer, req.id, req.msg.call, timeout_s)

    def on_status(self, req: Request[CallStatusMsg]) -> Message:
        if req.msg.group is not None:
            return GroupStatusReply(counts=self.jobs.group_status(req.msg.group))
        if req.msg.call is None:
            raise refusal(ErrorName.INVALID, "call_status needs a call id ('call') or a group id ('group')")
        return CallStatusReply(**self.jobs.status(req.msg.call))

    def on_cancel(self, req: Request[CallCancelMsg]) -> CallCancelReply:
        ids = list(req.msg.calls)
        if req.msg.group is not None:
            ids += self.jobs.store.group_ids(req.msg.group)
        return CallCancelReply(cancelled=self.jobs.cancel(ids))

    def on_logs(self, req: Request[CallLogsMsg]) -> CallLogsReply:
        return CallLogsReply(text=self.jobs.logs(req.msg.call))

    def on_recent(self, req: Request[CallsRecentMsg]) -> CallsRecentReply:
        """The latest spawned calls and their states, for the JupyterLab panel (``limit``: how many)."""
        limit = req.msg.limit
        if limit < 1:
            raise refusal(ErrorName.INVALID, f"calls_recent: limit must be a positive integer, not {limit!r}")
        return CallsRecentReply(calls=self.jobs.recent(limit, req.msg.since))

    def tick(self, now: float) -> None:
        self.jobs.tick(now)

    def drained(self) -> None:
        if self.jobs.commits.unwritten:  # one commit for the spawns (and results) of one read, then their replies
            self.jobs.commits.flush()

    def close(self) -> None:
        self.jobs.close()  # unfinished spawned calls stay in the store and run again after a restart
