"""One call pipeline: sending a call, leasing a container for warm calls, falling back, retrying, receiving.

Every calling form goes through here. ``call`` (``.remote``, class methods, batched
functions: the runtime batches) sends one input on this thread's ``SyncChannel``,
straight to a leased container when the thread holds a lease on the function
(``ThreadLeases``), else through the runtime, asking for one; past the thread cap it
goes as ``call_aio`` on the shared background loop. ``call_aio`` (``.remote.aio``)
sends on the running loop's ``AsyncChannel``, which sends the calls of one loop
turn together. ``items``/``items_aio`` (``remote_gen``) stream a generator's items;
``fanout`` hands ``.map``/``.starmap``/``.for_each`` to ``_map``; ``spawn``/
``spawn_aio`` (``.spawn``/``.spawn_map``) write calls to the job store, sent again
after a runtime restart (the ids make that safe). The connection itself (hello,
heartbeats, sockets) is ``_client``'s.

Invariants: the runtime decides everything that goes wrong under a lease: a call
that passes the function's timeout, whose container dies, or that fails and should
be retried is handed back (``lease_return``) and waited for as any other call. A
lease is the thread's hold: only its own thread's calls use it, and it goes with
the thread's channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from remotecell_runtime.protocol import framing, pickling, sharedmem
from remotecell_runtime.protocol.framing import Payload
from remotecell_runtime.protocol.message import Decoder
from remotecell_runtime.protocol.messages.calls import (
    CallMsg,
    CallsMsg,
    LeaseEndedMsg,
    LeaseLostMsg,
    LeaseMsg,
    LeaseReturnMsg,
    ResultEntry,
)
from remotecell_runtime.protocol.messages.jobs import SpawnEntry, SpawnMsg
from remotecell_runtime.protocol.messages.session import ErrorInfo
from remotecell_runtime.protocol.stream import StreamClosed, StreamConn

from . import _bridge, _cache_note, _client, _map, exceptions
from .exceptions import SerializationError

NEWS_EVERY_S = 0.01  # how often a thread's warm calls look at what the runtime sent it meanwhile
Reply = tuple[dict[str, Any], list[Payload]]
LEASE_NEWS = Decoder([LeaseMsg, LeaseEndedMsg, LeaseLostMsg])


@dataclasses.dataclass(frozen=True)
class Target:
    """What a call goes to: a registered definition (fid) on a connection, a class's method or not."""

    conn: _client.Connection
    fid: str
    method: str | None
    name: str  # for messages: ``square``, ``Model.predict``
    cache: bool = False  # a cache=True function: arguments and results travel as bytes, never shared memory

    @property
    def shm(self) -> bool:
        """Whether large arguments and results go through shared memory (the runtime's cache keeps bytes only)."""
        return self.conn.shm and not self.cache

    def call_msg(self, gen: bool = False, input_id: str = "") -> CallMsg:
        """One input to this target (a new one unless ``input_id`` is given)."""
        input_id = input_id or self.conn.new_id()
        _client.label(input_id, self.name)
        if self.cache:
            _cache_note.expect(input_id, self.name)
        return CallMsg(id=input_id, fid=self.fid, method=self.method or None, shm=self.shm, gen=gen)

    def header(self, msg: CallMsg | None = None) -> dict[str, Any]:
        """The header of ``msg`` (a new input when None) from this target's session."""
        header = (msg or self.call_msg()).to_wire()
        header["sid"] = self.conn.sid
        return header

    def fields(self) -> dict[str, Any]:
        """What every ``calls`` message of a map to this target carries besides its entries."""
        fields = CallsMsg(entries=[], fid=self.fid, method=self.method or None, shm=self.shm).fields()
        del fields["e"]
        fields["sid"] = self.conn.sid
        return fields

    def args_payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Payload:
        try:
            return pickling.serialize_args(args, kwargs, sharedmem.ShmPool.local() if self.shm else None)
        except Exception as exc:
            raise SerializationError(f"arguments of {self.name} cannot be pickled: {exc}") from exc


# -- one input -------------------------------------------------------------------------------------

def call(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One input, blocking: its value, or raise its error; Ctrl-C cancels it wherever it runs."""
    payload = target.args_payload(args, kwargs)
    channel = target.conn.channel()
    if isinstance(channel, _client.BridgedChannel):  # past the thread cap: on the shared loop
        return _bridge.run_in_background(_call_on_loop(target, target.call_msg(), payload))
    reply, payloads = leases_of(channel).call(target, target.conn.new_id(), [payload])
    return _client.result_value(reply, payloads)


def exchange(target: Target, header: dict[str, Any], payload: Payload,
             on_output: _client.OutputSink | None) -> Reply:
    """One input through the runtime, never a lease (a ``%%remote`` session's cell); its raw reply.

    ``header`` is ``target.header()``, made by the caller, which may cancel by its id meanwhile.
    """
    channel = target.conn.channel()
    try:
        return channel.roundtrip(header, [payload], on_output=on_output)
    except KeyboardInterrupt:
        channel.cancel([header["id"]])
        raise


async def call_aio(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One input from a coroutine; cancelling the task cancels the input."""
    return await _call_on_loop(target, target.call_msg(), target.args_payload(args, kwargs))


async def _call_on_loop(target: Target, msg: CallMsg, payload: Payload) -> Any:
    channel = target.conn.async_channel()
    try:
        reply, payloads = await channel.call(msg, target.conn.sid, payload)
    except asyncio.CancelledError:
        await channel.send(_client.cancel_header(target.conn, [msg.id]))
        raise
    return _client.result_value(reply, payloads)


def items(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    """A generator's items as the remote generator makes them; stopping early stops it there too."""
    header = target.header(target.call_msg(gen=True))
    channel = target.conn.channel()
    replies = channel.stream(header, [target.args_payload(args, kwargs)])
    finished = False
    try:
        for reply, payloads in replies:
            if reply["t"] != "item":
                finished = True
                _client.result_value(reply, payloads)  # raises what the generator raised
                return
            yield pickling.deserialize(payloads[0])
    finally:
        if not finished:  # the caller stopped early (break, Ctrl-C)
            channel.cancel([header["id"]])
            replies.close()


async def items_aio(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    header = target.header(target.call_msg(gen=True))
    channel = target.conn.async_channel()
    replies = channel.stream(header, [target.args_payload(args, kwargs)])
    finished = False
    try:
        async for reply, payloads in replies:
            if reply["t"] != "item":
                finished = True
                _client.result_value(reply, payloads)
                return
            yield pickling.deserialize(payloads[0])
    finally:
        await replies.aclose()
        if not finished:
            await channel.send(_client.cancel_header(target.conn, [header["id"]]))


# -- many inputs -----------------------------------------------------------------------------------

def fanout(target: Target) -> _map.Fanout:
    """A map's inputs to ``target`` (``_map.run`` sends them, many to a message, and receives them)."""
    fields = target.fields()

    def calls_frames(entries: list[framing.Entry], message_id: str) -> list[framing.Frame]:
        """One ``calls`` message of a map's inputs (``entries``: each one's id and payloads)."""
        if _client.LABELS is not None:
            for entry, _ in entries:
                _client.label(entry["id"], target.name)
        if target.cache:
            for entry, _ in entries:
                _cache_note.expect(entry["id"], target.name)
        return framing.encode_many("calls", entries, id=message_id, **fields)

    return _map.Fanout(target.conn, calls_frames, target.args_payload)


def spawn_payload(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Payload:
    try:  # no shared memory: the runtime keeps spawned inputs in its job store
        return pickling.serialize_args(args, kwargs)
    except Exception as exc:
        raise SerializationError(f"arguments of {name} cannot be pickled: {exc}") from exc


def _spawn_header(target: Target, entries: list[SpawnEntry]) -> dict[str, Any]:
    return target.conn.envelope(SpawnMsg(fid=target.fid, method=target.method or None, entries=entries))


def spawn(resolve: Callable[[], Target], entries: list[SpawnEntry], payloads: list[Payload]) -> None:
    """Write calls to the job store (``entries``: their ids), once the runtime committed them."""
    while True:
        target = resolve()
        try:
            target.conn.channel().roundtrip(_spawn_header(target, entries), payloads)
        except exceptions.RuntimeRestarted:
            continue  # sent again with the same ids: they are not run twice
        return


async def spawn_aio(resolve: Callable[[], Awaitable[Target]], entries: list[SpawnEntry],
                    payloads: list[Payload]) -> None:
    while True:
        target = await resolve()
        try:
            await target.conn.async_channel().roundtrip(_spawn_header(target, entries), payloads)
        except exceptions.RuntimeRestarted:
            continue
        return


# -- leases ----------------------------------------------------------------------------------------

def leases_of(channel: _client.SyncChannel) -> ThreadLeases:
    """The leases a thread's channel holds, made with its first call."""
    if channel.holder is None:
        channel.holder = ThreadLeases(channel)
    assert isinstance(channel.holder, ThreadLeases)
    return channel.holder


@dataclasses.dataclass
class HeldLease:
    """A container the runtime lent to one thread's blocking calls of one function: they go straight to it."""

    fid: str
    cid: str
    token: str  # the container takes calls carrying it, until the runtime takes the lease back
    sock: StreamConn  # to the container's own Unix socket
    timeout_s: float
    retries: bool  # the function retries errors: a failed call goes back to the runtime, which retries it
    runtime_id: str


class ThreadLeases:
    """The leases one thread's channel holds (one per function), and its calls that use them."""

    def __init__(self, channel: _client.SyncChannel) -> None:
        self.channel = channel
        self.conn = channel.conn
        self.held: dict[str, HeldLease] = {}  # fid -> lease
        self._news_due = 0.0  # monotonic time of the next look at the runtime's news between calls
        self.runtime_closed = False  # the runtime closed the channel's stream connection (it stopped or crashed)

    def _runtime_sent(self) -> bool:
        """Whether a message from the runtime waits on the channel (lease news, or a late reply)."""
        return self.channel.wire.readable()

    def close(self) -> None:
        """The channel closes (its thread ended): so do its leases' sockets."""
        for lease in list(self.held.values()):
            self._drop(lease)

    def call(self, target: Target, input_id: str, payloads: list[Payload],
             on_output: _client.OutputSink | None = None) -> tuple[dict[str, Any], list[Payload]]:
        """Input ``input_id`` of a function; its result message.

        With a lease on the function, it goes straight to the leased container (two hops);
        else through the runtime, asking for a lease (granted when the container is free
        and nothing else waits for it). Ctrl-C cancels the input wherever it runs.
        """
        _client.label(input_id, target.name)
        if self.held and time.monotonic() >= self._news_due:
            # A lease may have ended meanwhile. A look costs a poll (~3 us), so at most every NEWS_EVERY_S:
            # a call to a lease that ended is answered ``revoked`` by its container, or its connection is gone.
            self._news_due = time.monotonic() + NEWS_EVERY_S
            if self._runtime_sent():
                self._runtime_news()
            if self.runtime_closed:  # the runtime went away since the last call: its leases went with it
                self.runtime_closed = False
                if self.conn.watch.lost_runtime(self.conn.runtime_id):
                    raise _client.NotSent("the local runtime had crashed: it was started again and the call "
                                          "was not sent")
        lease = self.held.get(target.fid)
        if lease is not None and lease.runtime_id != self.conn.runtime_id:
            self._drop(lease)
            lease = None
        try:
            if lease is not None:
                answer = self._call_direct(lease, target, input_id, payloads, on_output)
                if answer is not None:
                    return answer
            msg = target.call_msg(input_id=input_id)
            msg.lease = self.conn.info.is_local
            return self.channel.roundtrip(target.header(msg), payloads, on_output)
        except KeyboardInterrupt:
            self._cancel(input_id, payloads, lease)
            raise

    def _cancel(self, input_id: str, payloads: list[Payload], lease: HeldLease | None) -> None:
        cid = None
        if lease is not None and self.held.get(lease.fid) is lease:  # it runs there, unknown to the runtime
            cid = lease.cid  # the runtime interrupts it there and takes the lease back
            self._drop(lease)
            sharedmem.discard(payloads)  # its shared memory is nobody else's to free
        self.channel.wire.send(framing.encode(_client.cancel_header(self.conn, [input_id], cid)))

    def _call_direct(self, lease: HeldLease, target: Target, request_id: str, payloads: list[Payload],
                     on_output: _client.OutputSink | None) -> tuple[dict[str, Any], list[Payload]] | None:
        """Send a call to the leased container and wait for it; None: the lease was taken back, go through the runtime.

        The runtime is still the one that decides when anything goes wrong: a call that passes
        the function's timeout, whose container dies (``lease_lost``), or that fails and should be
        retried is handed back to it (``lease_return``) and waited for as any other call.
        """
        sock = lease.sock
        msg = CallMsg(id=request_id, method=target.method or None, shm=target.conn.shm, token=lease.token)
        try:
            sock.send(framing.encode(msg.to_wire(), payloads, inline=True))
        except (OSError, TimeoutError):  # it closed our connection: the call never reached it whole
            self._drop(lease)
            return None
        deadline = time.monotonic() + lease.timeout_s
        ended = False  # the lease ended after our call ran: its result is on the way, then the lease goes
        while True:
            try:
                frames = sock.recv()  # its timeout wakes us to look at the runtime's news and the clock
            except StreamClosed:  # it went away under our call (the runtime's lease_lost says why)
                return self._hand_back(lease, msg, payloads, on_output, why="crash",
                                       cause="its container closed the connection during the call")
            except TimeoutError:
                news = self._runtime_news(lease.cid)
                if isinstance(news, LeaseEndedMsg):
                    if news.last != request_id:
                        self._drop(lease)
                        return None  # given up before our call came: it never ran there
                    ended = True
                elif isinstance(news, LeaseLostMsg) or self.runtime_closed:  # its container died, maybe under it
                    cause = (news.cause if isinstance(news, LeaseLostMsg) else "") or "its container died"
                    return self._hand_back(lease, msg, payloads, on_output, why="crash", cause=cause)
                left_ms = (deadline - time.monotonic()) * 1000
                if left_ms <= 0:
                    return self._hand_back(lease, msg, payloads, on_output, why="timeout")
                sock.set_timeout(int(min(_client.WAKE_MS, left_ms)) + 1)
                self.conn.watch.check_alive()
                self.conn.watch.check_restart(lease.runtime_id)
                continue
            reply, reply_payloads = framing.decode(frames)
            if reply.get("id") != request_id:
                sharedmem.discard(reply_payloads)  # a late reply to a call this thread gave up on
            elif reply["t"] == "output":
                _client.write_to(on_output, reply)
            elif reply["t"] == "revoked":
                self._drop(lease)
                return None
            else:  # its result; the caller reads it as a ResultEntry (every field checked), so only its status here
                status = reply.get("status")
                if status == "error" and lease.retries:
                    sharedmem.discard(reply_payloads)
                    error = ResultEntry.from_wire(reply).error
                    return self._hand_back(lease, msg, payloads, on_output, why="error", error=error)
                if ended:
                    self._drop(lease)
                else:
                    sock.set_timeout(_client.WAKE_MS)  # (nothing to do when it is that already)
                if status != "ok":  # the container kept no shared memory of the arguments
                    sharedmem.discard(payloads)
                return reply, reply_payloads

    def _runtime_news(self, cid: str | None = None) -> LeaseEndedMsg | LeaseLostMsg | None:
        """Read what the runtime sent meanwhile and act on it; news of the end of the lease on ``cid`` is returned
        instead."""
        mine = None
        while self._runtime_sent():
            try:
                frames = self.channel.wire.recv()
            except TimeoutError:  # the rest of a message did not come
                break
            except StreamClosed:
                self.runtime_closed = True
                break
            for reply, reply_payloads in _client.replies(*framing.decode(frames)):
                if reply["t"] not in _client.LEASE_NEWS:
                    sharedmem.discard(reply_payloads)  # a late reply to a call this thread gave up on
                    continue
                news = LEASE_NEWS(reply)
                if isinstance(news, LeaseEndedMsg | LeaseLostMsg) and news.cid == cid:
                    mine = news
                else:
                    self.news(reply)
        return mine

    def _hand_back(self, lease: HeldLease, msg: CallMsg, payloads: list[Payload],
                   on_output: _client.OutputSink | None, why: str, cause: str = "",
                   error: ErrorInfo | None = None) -> tuple[dict[str, Any], list[Payload]]:
        """Give a call that went wrong under ``lease`` to the runtime, which retries or fails it; its reply."""
        self._drop(lease)
        back = LeaseReturnMsg(id=msg.id, fid=lease.fid, cid=lease.cid, why=why, cause=cause, error=error,
                              method=msg.method, shm=msg.shm)
        try:
            self.channel.send(framing.encode(dict(back.to_wire(), sid=self.conn.sid), payloads), lease.runtime_id)
        except _client.NotSent:  # the runtime had crashed, with the container under our call
            raise exceptions.RuntimeRestarted(
                "the local runtime crashed during this call (it was started again); the call was lost with it"
            ) from None
        for reply in self.channel.replies_to(msg.id, on_output, None, lease.runtime_id):
            return reply
        raise AssertionError("unreachable: _replies() ends with the reply")

    def news(self, header: dict[str, Any]) -> None:
        """A ``lease`` granted to this thread, or one that ended (taken back, or its container is gone)."""
        news = LEASE_NEWS(header)
        held = self.held.get(news.fid)  # type: ignore[attr-defined]  # every lease news names its fid
        if not isinstance(news, LeaseMsg):
            if held is not None and held.cid == news.cid:  # type: ignore[attr-defined]
                self._drop(held)
            return
        if held is not None and held.cid == news.cid:  # lent again: same container, same socket
            held.token = news.token
            return
        if held is not None:
            self._drop(held)
        sock = self.conn.direct_conn(news.addr)
        if sock is None:  # its container is gone already: the calls go through the runtime
            return
        self.held[news.fid] = HeldLease(news.fid, news.cid, news.token, sock, news.timeout_s, news.retries,
                                        self.conn.runtime_id)

    def _drop(self, lease: HeldLease) -> None:
        if self.held.get(lease.fid) is lease:
            del self.held[lease.fid]
        self.conn.close_direct(lease.sock)
