"""The PostgreSQL hub: events between two hubs (two processes' worth) on a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatbot.hub import wire
from chatbot.hub.base import Closed, Delta, Event, Failure, Reply, Started, Title
from chatbot.hub.postgres import PostgresHub, channel_for
from tests.postgres import fresh_schema

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def until(self, test: Callable[[list[Event]], bool], seconds: float = 10) -> None:
        async def wait() -> None:
            while not test(self.events):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), seconds)


class Outage:
    """The database out of one hub's reach: its connection is ended, and it cannot
    connect again until :meth:`end` (the others are not touched)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.away = asyncio.Event()

    async def connect(self, dsn: str) -> Any:
        import asyncpg

        if self.away.is_set():
            raise OSError("the database is unreachable")
        return await asyncpg.connect(dsn)

    async def begin(self, cut_off: PostgresHub) -> None:
        """Until the hub has noticed it lost its connection."""
        import asyncpg

        self.away.set()
        admin = await asyncpg.connect(self.url)
        await admin.fetchval(
            "SELECT pg_terminate_backend($1)", cut_off._connection.get_server_pid()
        )
        await admin.close()
        await asyncio.wait_for(cut_off._lost.wait(), 10)

    def end(self) -> None:
        self.away.clear()


async def _nothing(*args: Any) -> Any:
    return None


def hub(url: str) -> PostgresHub:
    return PostgresHub(url, load_reply=_nothing, load_newest=_nothing)


@pytest.fixture
def url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
async def pair(url: str) -> AsyncIterator[tuple[PostgresHub, PostgresHub]]:
    a, b = hub(url), hub(url)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_deltas_reach_the_other_process_gathered_and_in_order(
    pair: tuple[PostgresHub, PostgresHub], url: str
) -> None:
    import asyncpg

    a, b = pair
    seen = Recorder()
    b.subscribe("s1", seen)
    spy = await asyncpg.connect(url)
    payloads: list[str] = []
    await spy.add_listener(a._channel, lambda *args: payloads.append(args[3]))
    a.publish(Started("s1", "m1"))
    words = [f"w{i} " for i in range(200)]
    for word in words:
        a.publish(Delta("s1", word, "m1"))
    a.publish(Failure("s1", "backend_error", "the model failed", True, "m1"))
    await seen.until(lambda events: isinstance(events[-1], Failure) if events else False)
    await spy.close()
    assert isinstance(seen.events[0], Started)
    deltas = [e for e in seen.events if isinstance(e, Delta)]
    assert "".join(d.text for d in deltas) == "".join(words)
    assert all(d.reply_to == "m1" for d in deltas)
    assert seen.events[-1] == Failure("s1", "backend_error", "the model failed", True, "m1")
    # 200 deltas published at once went out as far fewer notifications.
    sent_deltas = [p for p in payloads if json.loads(p)["t"] == "d"]
    assert 1 <= len(sent_deltas) < 20
    assert all(len(p.encode()) < 8000 for p in payloads)


async def test_a_reply_does_not_wait_for_the_deltas_gathered_before_it(url: str) -> None:
    # Deltas are gathered for an hour here: what comes after them must end the wait.
    a = PostgresHub(url, load_reply=_nothing, load_newest=_nothing, flush_seconds=3600)
    b = hub(url)
    await a.start()
    await b.start()
    try:
        seen = Recorder()
        b.subscribe("s1", seen)
        a.publish(Started("s1", "m1"))
        a.publish(Delta("s1", "Hello, ", "m1"))
        await seen.until(lambda events: any(isinstance(e, Delta) for e in events))
        # This delta alone starts the gathering (the sender's turns of the loop to reach
        # it); the failure published during it must go out at once, the delta before it.
        a.publish(Delta("s1", "world", "m1"))
        for _ in range(3):
            await asyncio.sleep(0)
        a.publish(Failure("s1", "backend_error", "the model failed", True, "m1"))
        await seen.until(lambda events: isinstance(events[-1], Failure))
        assert "".join(e.text for e in seen.events if isinstance(e, Delta)) == "Hello, world"
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_socket_opening_mid_reply_gets_the_text_so_far(
    pair: tuple[PostgresHub, PostgresHub],
) -> None:
    a, b = pair
    seen = Recorder()
    b.subscribe("s1", seen)
    a.publish(Started("s1", None))
    a.publish(Delta("s1", "Hello, ", None))
    a.publish(Delta("s1", "world", None))
    await seen.until(
        lambda events: "".join(getattr(e, "text", "") for e in events) == "Hello, world"
    )
    progress = b.snapshot("s1")
    assert progress is not None and progress.text == "Hello, world"


async def test_a_large_multibyte_delta_arrives_whole(
    pair: tuple[PostgresHub, PostgresHub],
) -> None:
    a, b = pair
    seen = Recorder()
    b.subscribe("s1", seen)
    text = '日本語のテキスト😀\n"quoted" ' * 800  # far over a notification's 8,000 bytes
    a.publish(Started("s1", "r"))
    a.publish(Delta("s1", text, "r"))
    a.publish(Title("s1", "done"))
    await seen.until(lambda events: bool(events) and isinstance(events[-1], Title))
    assert "".join(e.text for e in seen.events if isinstance(e, Delta)) == text


async def test_a_cancel_reaches_the_process_that_generates(
    pair: tuple[PostgresHub, PostgresHub],
) -> None:
    a, b = pair
    cancelled: list[str] = []
    arrived = asyncio.Event()

    def generating_here(session_id: str) -> bool:
        cancelled.append(session_id)
        arrived.set()
        return True

    a.serve_cancels(generating_here)
    b.serve_cancels(lambda session_id: False)  # nothing of it generates on b
    b.cancel("s9")
    await asyncio.wait_for(arrived.wait(), 10)
    assert cancelled == ["s9"]


async def test_a_closed_session_closes_the_sockets_of_the_other_process(
    pair: tuple[PostgresHub, PostgresHub],
) -> None:
    a, b = pair
    seen = Recorder()
    b.subscribe("gone", seen)
    a.serve_cancels(lambda session_id: False)
    b.serve_cancels(lambda session_id: False)
    a.close_session("gone", 4404, "session not found")
    await seen.until(lambda events: bool(events))
    assert seen.events == [Closed("gone", 4404, "session not found")]


async def test_a_failure_for_one_socket_crosses_with_its_wait(
    pair: tuple[PostgresHub, PostgresHub],
) -> None:
    a, b = pair
    seen = Recorder()
    b.subscribe("s1", seen)
    refused = Failure("s1", "quota_exceeded", "over quota", True, "m1", 3600, "socket-x-1")
    a.publish(refused)
    await seen.until(lambda events: bool(events))
    assert seen.events == [refused]


async def test_a_process_does_not_hear_its_own_events_twice(
    pair: tuple[PostgresHub, PostgresHub],
) -> None:
    a, b = pair
    mine, theirs = Recorder(), Recorder()
    a.subscribe("s1", mine)
    b.subscribe("s1", theirs)
    a.publish(Title("s1", "one"))
    a.publish(Title("s1", "two"))
    await theirs.until(lambda events: len(events) == 2)
    # b's copy arrived through the database; a's own notifications came back to a too and
    # were skipped: a still has exactly the two it delivered itself.
    b.publish(Title("s1", "three"))
    await mine.until(lambda events: len(events) == 3)
    assert [e.title for e in mine.events if isinstance(e, Title)] == ["one", "two", "three"]


async def test_schemas_do_not_hear_each_other(url: str) -> None:
    with fresh_schema() as other_url:
        a, b = hub(url), hub(other_url)
        await a.start()
        await b.start()
        try:
            assert a._channel != b._channel
            seen, control = Recorder(), Recorder()
            b.subscribe("s1", seen)
            third = hub(url)
            await third.start()
            third.subscribe("s1", control)
            a.publish(Title("s1", "only for my schema"))
            await control.until(lambda events: bool(events))
            assert seen.events == []
            await third.aclose()
        finally:
            await a.aclose()
            await b.aclose()


def test_channel_names() -> None:
    assert channel_for("public") == "chatbot"
    assert channel_for("tenant_a") == "chatbot.tenant_a"
    assert len(channel_for("x" * 100).encode()) <= 63
    assert channel_for("x" * 100 + "a") != channel_for("x" * 100 + "b")


async def test_the_hub_reconnects_after_its_connection_is_killed(
    pair: tuple[PostgresHub, PostgresHub], url: str
) -> None:
    import asyncpg

    a, b = pair
    old_pid = b._connection.get_server_pid()
    admin = await asyncpg.connect(url)
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    await admin.close()
    # b notices, reconnects and listens again on its own.
    await asyncio.wait_for(b.wait_opens(2), 15)
    assert b._connection.get_server_pid() != old_pid
    await b.ping()
    seen = Recorder()
    b.subscribe("s1", seen)
    # Sent until one arrives: a notification sent before b listened again is lost by design.
    for attempt in range(100):
        a.publish(Title("s1", f"after {attempt}"))
        try:
            await seen.until(lambda events: bool(events), seconds=0.2)
            break
        except TimeoutError:
            continue
    assert seen.events and isinstance(seen.events[0], Title)


def test_split_text_keeps_every_piece_under_the_limit() -> None:
    text = 'a\u00e9\u65e5\U0001f600\n"\\' * 3000
    pieces = wire.split_text(text)
    assert "".join(pieces) == text
    assert all(wire.text_bytes(piece) <= wire.MAX_TEXT_BYTES for piece in pieces)
    assert len(pieces) > 1


def test_a_lone_surrogate_is_sent_escaped() -> None:
    payload = wire.dumps({"t": "d", "x": "a\ud800b"})
    payload.encode("utf-8")
    assert json.loads(payload)["x"] == "a\ud800b"


async def test_a_reply_stored_while_the_hub_was_away_reaches_its_sockets(url: str) -> None:
    """Notifications sent while a hub is disconnected are lost; the reply is not: once the
    hub listens again it reads what its sockets missed from the rows."""
    from chatbot.stores.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    await store.migrate()
    session = await store.create_session("alice", backend="echo")
    stored = await store.add_user_message("alice", session.id, content="hi", client_id="c1")
    outage = Outage(url)
    a = PostgresHub(url, load_reply=store.message_by_id, load_newest=store.newest_replies)
    b = PostgresHub(
        url, load_reply=store.message_by_id, load_newest=store.newest_replies,
        connect=outage.connect,
    )  # fmt: skip
    await a.start()
    await b.start()
    try:
        seen = Recorder()
        b.subscribe(session.id, seen)
        await outage.begin(b)
        reply = await store.add_reply(
            "alice", session.id, reply_to=stored.message.id, content="Echo: hi",
            status="complete",
        )  # fmt: skip
        a.publish(Reply(session.id, reply, "c1"))  # sent while b is away: lost
        outage.end()
        await asyncio.wait_for(b.wait_opens(2), 15)
        await seen.until(lambda events: bool(events))
        assert seen.events == [Reply(session.id, reply, "c1")]
    finally:
        await a.aclose()
        await b.aclose()
        await store.close()


async def test_what_a_hub_publishes_while_cut_off_goes_out_once_it_is_back(url: str) -> None:
    """A reply's end, a title, a closed session published while the hub's own connection
    is down still reach the other processes when it reconnects (the deltas do not)."""
    outage = Outage(url)
    a = PostgresHub(url, load_reply=_nothing, load_newest=_nothing, connect=outage.connect)
    b = hub(url)
    await a.start()
    await b.start()
    try:
        seen = Recorder()
        b.subscribe("s1", seen)
        await outage.begin(a)
        a.publish(Delta("s1", "too late", None))
        a.publish(Title("s1", "kept"))
        a.publish(Failure("s1", "backend_error", "kept too", False, "m1"))
        outage.end()
        await asyncio.wait_for(a.wait_opens(2), 15)
        await seen.until(lambda events: len(events) >= 2)
        assert seen.events == [
            Title("s1", "kept"), Failure("s1", "backend_error", "kept too", False, "m1"),
        ]  # fmt: skip
    finally:
        await a.aclose()
        await b.aclose()
