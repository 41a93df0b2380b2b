"""The hub of several processes on one PostgreSQL: ``LISTEN``/``NOTIFY``.

Each process keeps a :class:`~chatbot.hub.local.LocalHub` for its own sockets and delivers
its own events there at once. What it publishes also goes out as notifications on one
channel (:mod:`chatbot.hub.wire` says what a payload holds), and what the other processes
publish comes in and is delivered to the sockets here. A reply being generated elsewhere is
followed from its deltas, so that a socket opening here mid-reply gets the text so far.

* One dedicated connection, opened with the database URL and never borrowed from a pool,
  listens and sends. It must be a real session: a transaction-pooling proxy (PgBouncer in
  transaction mode) drops ``LISTEN``.
* Deltas are gathered for a few tens of milliseconds and sent as one notification per
  session, never one per token; anything else is sent at once, in order, and a session's
  gathered deltas go before it.
* When the connection drops, the hub reconnects by itself, listens again, and reads from
  the rows what its sockets missed meanwhile: notifications sent in the gap are lost by
  design, the stored replies are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from chatbot.hub import wire
from chatbot.hub.base import (
    CancelHandler,
    Event,
    Failure,
    Hub,
    InProgress,
    Listener,
    Reply,
    Started,
)
from chatbot.hub.local import LocalHub
from chatbot.stores.base import Message, utcnow

logger = logging.getLogger("chatbot.hub")

#: How long deltas are gathered before they go out together.
FLUSH_SECONDS = 0.03
#: How long sending one batch may take before the connection counts as lost.
SEND_SECONDS = 5.0
#: How often the listening connection is checked (one that died silently is noticed).
WATCH_SECONDS = 10.0
#: What is kept to send while disconnected (the newest are dropped beyond it).
MAX_KEPT = 10_000
#: Waits between attempts to reconnect: from the first to the last, which then repeats.
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Replies stored this long before a loss was noticed may have been missed too.
MISSED_MARGIN = timedelta(seconds=2)
#: A reply read by id for the sockets here: the message and the client id it answers.
LoadReply = Callable[[int], Awaitable[Message | None]]
#: The newest reply of each of these sessions' current branches, with the client id of the
#: message it answers (what a socket missed while the hub was away).
LoadNewest = Callable[[list[str]], Awaitable[dict[str, tuple[Message, str | None]]]]


class HubUnavailable(RuntimeError):
    """The hub's connection to the database is down (``/readyz`` says so)."""


def channel_for(schema: str) -> str:
    """The channel of a database schema: several deployments (or tests) may share one
    database in different schemas, and must not hear each other. A channel name is at most
    63 bytes: a longer schema's name is cut and told apart by a hash of the whole."""
    if schema == "public":
        return "chatbot"
    name = f"chatbot.{schema}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(schema.encode()).hexdigest()[:16]
    return f"chatbot.{schema.encode()[:38].decode(errors='ignore')}.{digest}"


class PostgresHub(Hub):
    """Events of every process on the database, delivered to the sockets of this one."""

    def __init__(
        self,
        dsn: str,
        *,
        load_reply: LoadReply,
        load_newest: LoadNewest,
        connect: Callable[[str], Awaitable[Any]] | None = None,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._flush_seconds = flush_seconds
        self._load_reply = load_reply
        self._load_newest = load_newest
        self._connect = connect
        #: This process, in the payloads it sends.
        self.process = secrets.token_hex(8)
        self._local = LocalHub()
        self._cancel: CancelHandler | None = None
        self._outbox: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        #: Set when the outbox holds something else than deltas: it goes out at once.
        self._urgent = asyncio.Event()
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._numbers = itertools.count()
        self._connection: Any = None
        self._channel = "chatbot"
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._lost = asyncio.Event()
        self._closing = False
        #: How many times the hub has connected (more than once: it reconnected).
        self.opens = 0
        self._opened_at = 0.0
        self._opened = asyncio.Condition()
        #: The sessions whose reply is generated here (their progress is this process's own).
        self._generating: set[str] = set()
        #: The newest reply id delivered here per session, to tell what a gap missed.
        self._delivered: dict[str, int] = {}
        #: When the connection was last lost (what was stored after it may have been missed).
        self._lost_at: datetime | None = None

    # The interface -----------------------------------------------------------------------

    def subscribe(self, session_id: str, listener: Listener) -> None:
        self._local.subscribe(session_id, listener)

    def unsubscribe(self, session_id: str, listener: Listener) -> None:
        self._local.unsubscribe(session_id, listener)
        if not self._local.has_listeners(session_id):
            self._delivered.pop(session_id, None)

    def publish(self, event: Event) -> None:
        self._track(event, here=True)
        self._local.publish(event)
        self._send(wire.encode(event))

    def snapshot(self, session_id: str) -> InProgress | None:
        return self._local.snapshot(session_id)

    def serve_cancels(self, handler: CancelHandler) -> None:
        self._cancel = handler

    def cancel(self, session_id: str) -> None:
        if self._cancel is not None and self._cancel(session_id):
            return
        self._send(wire.encode(wire.Cancel(session_id)))

    async def start(self) -> None:
        await self._open()
        self._tasks = [
            asyncio.create_task(self._sender(), name="chatbot-hub-sender"),
            asyncio.create_task(self._receiver(), name="chatbot-hub-receiver"),
            asyncio.create_task(self._keeper(), name="chatbot-hub-keeper"),
            asyncio.create_task(self._watch(), name="chatbot-hub-watch"),
        ]

    async def aclose(self) -> None:
        self._closing = True
        # What is still in the outbox (a shutdown's last replies) goes out first.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), timeout=2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()

    async def ping(self) -> None:
        """Raise :class:`HubUnavailable` unless the listening connection answers."""
        connection = self._connection
        if connection is None or connection.is_closed():
            raise HubUnavailable("the hub's database connection is down; it reconnects by itself")
        try:
            async with self._lock:
                await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout=2)
        except Exception as exc:
            raise HubUnavailable("the hub's database connection does not answer") from exc

    async def wait_opens(self, count: int) -> None:
        """Until the hub has connected ``count`` times."""
        async with self._opened:
            await self._opened.wait_for(lambda: self.opens >= count)

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed()

    # Sending -----------------------------------------------------------------------------

    def _track(self, event: Event, *, here: bool) -> None:
        session_id = event.session_id
        if isinstance(event, Started):
            if here:
                self._generating.add(session_id)
        elif isinstance(event, Reply | Failure) and not event.only:
            self._generating.discard(session_id)
            if isinstance(event, Reply) and self._local.has_listeners(session_id):
                newest = self._delivered.get(session_id, 0)
                self._delivered[session_id] = max(newest, event.message.id)

    def _send(self, payload: dict[str, Any]) -> None:
        if payload["t"] == "d":
            last = self._outbox[-1] if self._outbox else None
            if (
                last is not None
                and last["t"] == "d"
                and last["s"] == payload["s"]
                and last["r"] == payload["r"]
                and wire.text_bytes(last["x"] + payload["x"]) <= wire.MAX_TEXT_BYTES
            ):
                last["x"] += payload["x"]
                self._wake.set()
                return
            for piece in wire.split_text(payload["x"]):
                self._outbox.append({**payload, "x": piece})
        else:
            self._outbox.append(payload)
            self._urgent.set()
        self._wake.set()

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                # Only deltas: wait a moment for more, and send them together; but a reply
                # (or anything else) published meanwhile ends the wait, so that it never
                # waits for the deltas before it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._flush_seconds)
            await self._flush()

    async def _flush(self) -> None:
        self._wake.clear()
        self._urgent.clear()
        batch, self._outbox = self._outbox, []
        if not batch:
            return
        payloads = []
        for payload in batch:
            payload["p"], payload["n"] = self.process, next(self._numbers)
            payloads.append(wire.dumps(payload))
        connection = self._connection
        if connection is None or connection.is_closed():
            self._keep(batch)
            return
        try:
            async with self._lock:
                await connection.execute(
                    "SELECT pg_notify($1, payload) FROM unnest($2::text[]) "
                    "WITH ORDINALITY AS sent(payload, position) ORDER BY position",
                    self._channel,
                    payloads,
                    timeout=SEND_SECONDS,
                )
        except Exception:
            logger.warning("the hub could not send %d notification(s); reconnecting", len(batch))
            self._keep(batch)
            self._lost.set()

    def _keep(self, batch: list[dict[str, Any]]) -> None:
        """Keep what could not be sent for when the hub is connected again, but the deltas:
        a reply's end, an error, a cancel, a closed session still matter then, and a
        receiver skips a reply it already had; the deltas of a reply would come too late."""
        kept = [payload for payload in batch if payload["t"] != "d"]
        self._outbox[:0] = kept[-MAX_KEPT:]
        del self._outbox[MAX_KEPT:]

    # Receiving ---------------------------------------------------------------------------

    def _on_notification(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            logger.warning("the hub ignored a notification that is not JSON")
            return
        if isinstance(data, dict) and data.get("p") != self.process:
            self._inbox.put_nowait(data)

    async def _receiver(self) -> None:
        while True:
            data = await self._inbox.get()
            try:
                event = wire.decode(data)
                if event is not None:
                    await self._deliver(event)
            except Exception:
                logger.exception("the hub failed to deliver a notification")

    async def _deliver(self, event: wire.Wire) -> None:
        if isinstance(event, wire.Cancel):
            if self._cancel is not None:
                self._cancel(event.session_id)
            return
        if isinstance(event, wire.StoredReply):
            if event.only is None and not self._local.has_listeners(event.session_id):
                self._local.forget(event.session_id)
                return  # nobody here to tell
            if event.only is None and event.message_id <= self._delivered.get(event.session_id, 0):
                return  # had it already (sent again after a send that seemed to fail)
            message = await self._load_reply(event.message_id)
            if message is None or message.session_id != event.session_id:
                self._local.forget(event.session_id)
                return  # deleted meanwhile
            reply = Reply(event.session_id, message, event.reply_to, event.only)
            self._track(reply, here=False)
            self._local.publish(reply)
            return
        self._track(event, here=False)
        self._local.publish(event)

    # The connection ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self._connect is not None:
            connection = await self._connect(self._dsn)
        else:
            import asyncpg

            connection = await asyncpg.connect(self._dsn)
        try:
            schema = await connection.fetchval("SELECT current_schema()")
            self._channel = channel_for(schema or "public")
            await connection.add_listener(self._channel, self._on_notification)
            connection.add_termination_listener(lambda _: self._lost.set())
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._opened_at = asyncio.get_running_loop().time()
        self._lost.clear()
        async with self._opened:
            self.opens += 1
            self._opened.notify_all()

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)
            if not connection.is_closed():
                connection.terminate()

    async def _watch(self) -> None:
        """Check the listening connection now and then: one that died without a word from
        the network (a cable pulled) would otherwise look alive forever."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if self._lost.is_set():
                continue
            try:
                await self.ping()
            except HubUnavailable:
                self._lost.set()

    async def _keeper(self) -> None:
        """Reconnect whenever the connection is lost, then catch up from the rows. A
        connection lost again at once (a failure that repeats) waits longer each time."""
        pause = 0.0
        while True:
            await self._lost.wait()
            if self._closing:
                return
            self._lost_at = utcnow() - MISSED_MARGIN
            lived = asyncio.get_running_loop().time() - self._opened_at
            pause = min(max(pause * 2, 0.5), RECONNECT_SECONDS[-1]) if lived < 2 else 0.0
            if pause:
                await asyncio.sleep(pause)
            logger.warning("the hub lost its database connection; reconnecting")
            await self._drop_connection()
            for wait in itertools.chain(RECONNECT_SECONDS, itertools.repeat(RECONNECT_SECONDS[-1])):
                try:
                    await self._open()
                    break
                except Exception as exc:
                    logger.warning(
                        "the hub could not reconnect (%s); trying again", type(exc).__name__
                    )
                    await asyncio.sleep(wait)
            logger.info("the hub is listening again")
            self._wake.set()  # what was kept while it was away
            await self._catch_up()

    async def _catch_up(self) -> None:
        """After a gap: forget the progress of replies generated elsewhere (their ends may
        have been missed) and deliver the stored replies the sockets here have not had."""
        self._local.forget_all(keep=self._generating)
        sessions = self._local.sessions()
        if not sessions:
            return
        try:
            newest = await self._load_newest(sessions)
        except Exception:
            logger.exception("the hub could not read what its sockets missed")
            return
        since = self._lost_at
        for session_id, (message, reply_to) in newest.items():
            known = self._delivered.get(session_id)
            if known is None and since is not None and message.created_at < since:
                continue  # from before the gap: the sockets here had their chance at it
            if message.id > (known or 0):
                self._delivered[session_id] = message.id
                self._local.publish(Reply(session_id, message, reply_to))
