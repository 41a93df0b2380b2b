"""A turn and the session workers, without a server: a real SQLite file, the in-process hub
and the echo backend, and the events a socket would receive."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chatbot.chat.turn import Job, Turn, Window
from chatbot.chat.worker import Workers
from chatbot.echo import EchoBackend
from chatbot.errors import InvalidRequest
from chatbot.hub.base import Closed, Delta, Event, Failure, Reply, Started
from chatbot.hub.local import LocalHub
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores.base import Session
from chatbot.stores.sqlite import SQLiteStore


class Recorder:
    """A hub listener that keeps every event, and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def until(self, kind: type, count: int = 1) -> list[Event]:
        async with asyncio.timeout(10):
            while len(found := [e for e in self.events if isinstance(e, kind)]) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return found


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


async def opened(db_path: Path) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{db_path}")
    await store.open()
    await store.migrate()
    return store


def registry(delay: float = 0.0) -> BackendRegistry:
    return BackendRegistry({"echo": EchoBackend("echo", {"delay": delay})}, "echo")


async def new_session(store: SQLiteStore) -> Session:
    return await store.create_session("alice", backend="echo", model="echo")


def test_a_turn_stores_both_messages_and_publishes_the_stream(
    runner: asyncio.Runner, db_path: Path
) -> None:
    async def scenario() -> tuple[list[Event], Window]:
        store = await opened(db_path)
        session = await new_session(store)
        hub, seen = LocalHub(), Recorder()
        hub.subscribe(session.id, seen)
        turn = Turn(
            Job("alice", "hello there", "c1"),
            Window.of(session, 50),
            store=store,
            backends=registry(),
            publish=hub.publish,
        )
        window = await turn.run()
        await store.close()
        return seen.events, window

    events, window = runner.run(scenario())
    session_id = events[0].session_id
    assert events[0] == Started(session_id, "c1")
    assert [e.text for e in events if isinstance(e, Delta)] == ["Echo: ", "hello ", "there"]
    reply = events[-1]
    assert isinstance(reply, Reply)
    assert (reply.message.content, reply.reply_to, reply.only) == ("Echo: hello there", "c1", None)
    # Both rows are on disk, with the count kept in the same transactions.
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
        (count,) = db.execute("SELECT message_count FROM sessions").fetchone()
    assert rows == [("user", "hello there"), ("assistant", "Echo: hello there")]
    assert count == 2
    # The window holds the branch up to the stored reply: the next message follows it.
    assert window.last_id == reply.message.id
    assert [m.content for m in window.messages] == ["hello there", "Echo: hello there"]


def test_the_window_is_read_once_for_a_session_with_history_then_kept(
    runner: asyncio.Runner, db_path: Path
) -> None:
    async def scenario() -> list[str]:
        store = await opened(db_path)
        session = await new_session(store)
        for n in range(3):
            await store.add_message("alice", session.id, role="user", content=f"old {n}")
        session = await store.get_session("alice", session.id)
        hub = LocalHub()
        window = Window.of(session, 3)
        for text in ("one", "two"):
            turn = Turn(
                Job("alice", text), window, store=store, backends=registry(),
                publish=hub.publish,
            )  # fmt: skip
            window = await turn.run()
        await store.close()
        return [m.content for m in window.messages]

    # Only the newest three, read from the store once and then kept in step.
    assert runner.run(scenario()) == ["Echo: one", "two", "Echo: two"]


def test_a_window_out_of_step_with_the_store_is_read_again(
    runner: asyncio.Runner, db_path: Path
) -> None:
    async def scenario() -> list[str]:
        store = await opened(db_path)
        session = await new_session(store)
        hub = LocalHub()
        window = await Turn(
            Job("alice", "first"), Window.of(session, 50), store=store, backends=registry(),
            publish=hub.publish,
        ).run()  # fmt: skip
        # Another process writes to the same session meanwhile.
        await store.add_message("alice", session.id, role="user", content="elsewhere")
        window = await Turn(
            Job("alice", "second"), window, store=store, backends=registry(),
            publish=hub.publish,
        ).run()  # fmt: skip
        await store.close()
        return [m.content for m in window.messages]

    assert runner.run(scenario()) == [
        "first", "Echo: first", "elsewhere", "second", "Echo: second",
    ]  # fmt: skip


def test_a_repeated_id_gets_the_stored_reply_for_the_asker_only(
    runner: asyncio.Runner, db_path: Path
) -> None:
    async def scenario() -> tuple[list[Event], int]:
        store = await opened(db_path)
        session = await new_session(store)
        hub, seen = LocalHub(), Recorder()
        hub.subscribe(session.id, seen)
        window = Window.of(session, 50)
        for asker in ("socket-a", "socket-b"):
            job = Job("alice", "once", "same-id", asker=asker)
            window = await Turn(
                job, window, store=store, backends=registry(), publish=hub.publish
            ).run()
        count = (await store.get_session("alice", session.id)).message_count
        await store.close()
        return seen.events, count

    events, count = runner.run(scenario())
    replies = [e for e in events if isinstance(e, Reply)]
    assert [(r.message.content, r.only) for r in replies] == [
        ("Echo: once", None), ("Echo: once", "socket-b"),
    ]  # fmt: skip
    assert replies[0].message == replies[1].message
    assert count == 2  # answered once, stored once


def test_workers_answer_a_session_in_order_and_refuse_past_the_queue(
    runner: asyncio.Runner, db_path: Path
) -> None:
    async def scenario() -> tuple[list[str], str]:
        store = await opened(db_path)
        session = await new_session(store)
        hub, seen = LocalHub(), Recorder()
        hub.subscribe(session.id, seen)
        settings = replace(Settings(), session_queue_size=2)
        workers = Workers(store, registry(delay=0.01), hub, settings)
        await workers.submit(session, Job("alice", "a"))
        await workers.submit(session, Job("alice", "b"))
        with pytest.raises(InvalidRequest) as refused:
            await workers.submit(session, Job("alice", "c"))
        await seen.until(Reply, 2)
        await workers.drain(5)
        await store.close()
        replies = [e.message.content for e in seen.events if isinstance(e, Reply)]
        return replies, refused.value.code

    # Nothing runs between the three calls: "a" and "b" fill the queue of two.
    replies, code = runner.run(scenario())
    assert replies == ["Echo: a", "Echo: b"]
    assert code == "busy"


def test_cancel_through_the_hub_stops_the_reply_and_stores_it_cancelled(
    runner: asyncio.Runner, db_path: Path
) -> None:
    async def scenario() -> Reply:
        store = await opened(db_path)
        session = await new_session(store)
        hub, seen = LocalHub(), Recorder()
        hub.subscribe(session.id, seen)
        workers = Workers(store, registry(delay=30), hub, Settings())
        await workers.submit(session, Job("alice", "one two three", "c"))
        await seen.until(Delta)
        hub.cancel(session.id)
        (reply,) = await seen.until(Reply)
        await store.close()
        assert isinstance(reply, Reply)
        return reply

    reply = runner.run(scenario())
    assert (reply.message.status, reply.message.content) == ("cancelled", "Echo: ")


def test_a_deleted_session_closes_its_listeners(runner: asyncio.Runner, db_path: Path) -> None:
    async def scenario() -> tuple[str, list[Event]]:
        store = await opened(db_path)
        session = await new_session(store)
        hub, seen = LocalHub(), Recorder()
        hub.subscribe(session.id, seen)
        workers = Workers(store, registry(), hub, Settings())
        await store.delete_session("alice", session.id)
        await workers.submit(session, Job("alice", "anyone?"))
        await seen.until(Closed)
        await store.close()
        return session.id, seen.events

    session_id, events = runner.run(scenario())
    assert events == [Closed(session_id, 4404, "session not found")]


def test_the_snapshot_is_the_text_so_far_of_the_reply_in_progress() -> None:
    hub = LocalHub()
    assert hub.snapshot("s") is None
    hub.publish(Started("s", "c"))
    hub.publish(Delta("s", "Hel", "c"))
    hub.publish(Delta("s", "lo", "c"))
    progress = hub.snapshot("s")
    assert progress is not None and (progress.reply_to, progress.text) == ("c", "Hello")
    hub.publish(Failure("s", "backend_error", "down", reply_to="c"))
    assert hub.snapshot("s") is None
