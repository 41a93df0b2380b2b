"""The per-user limits counted in PostgreSQL (chatbot.limits_postgres): one count for every
process on a database. Each :class:`PostgresLimits` here has its own connection pool, as each
server process has; the tests assert what the rows and the decisions say."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from chatbot.limits import MemoryLimits, RateDecision, limits_for
from chatbot.limits_postgres import PostgresLimits
from chatbot.settings import Settings
from chatbot.stores.postgres import PostgresStore
from chatbot.stores.sqlite import SQLiteStore
from tests.conftest import ServerFactory, expect_close, make_token, recv_json
from tests.postgres import run_sql


@pytest.fixture
def url(postgres_url: str) -> str:
    """A fresh schema, migrated by the store as a server starting on it would."""

    async def migrate() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())
    return postgres_url


@contextlib.asynccontextmanager
async def process(
    url: str, *, pool_size: int = 2, **settings: Any
) -> AsyncIterator[PostgresLimits]:
    """What one server process has: its own pool, and the limits on it (no heartbeat:
    tests call ``renew()`` when they mean a heartbeat)."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size)
    try:
        yield PostgresLimits(Settings(**settings), pool)
    finally:
        await pool.close()


async def rows(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        found: list[asyncpg.Record] = await connection.fetch(query, *args)
        return found
    finally:
        await connection.close()


async def script(url: str, statements: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statements)
    finally:
        await connection.close()


async def shift_back(url: str, user: str, seconds: float) -> None:
    """Move a user's window ``seconds`` into the past: what the database's clock going
    forward looks like to the next message (the process's clock does not move)."""
    await rows(
        url,
        "UPDATE rate_windows SET stamps = ARRAY(SELECT s - make_interval(secs => $2) "
        "FROM unnest(stamps) AS s), touched = touched - make_interval(secs => $2) "
        "WHERE user_id = $1",
        user,
        seconds,
    )


def test_the_limits_follow_the_store(url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(database_url=url)
        store = PostgresStore(url)
        await store.open()
        try:
            limits = limits_for(settings, store)
            assert isinstance(limits, PostgresLimits)
            assert limits.pool is store.pool
        finally:
            await store.close()
        sqlite_url = f"sqlite:///{tmp_path / 'chat.db'}"
        local = limits_for(Settings(database_url=sqlite_url), SQLiteStore(sqlite_url))
        assert isinstance(local, MemoryLimits)

    asyncio.run(scenario())


# Messages per minute -----------------------------------------------------------------------


def test_one_window_per_user_whichever_process_counts(url: str) -> None:
    async def scenario() -> None:
        async with (
            process(url, rate_limit_per_minute=3) as first,
            process(url, rate_limit_per_minute=3) as second,
        ):
            for limits in (first, second, first):
                assert await limits.hit("alice") == RateDecision(allowed=True)
            refused = await second.hit("alice")
            assert (refused.allowed, refused.refused) == (False, 1)
            assert 59 <= refused.retry_after <= 60
            # The refused streak counts on every process.
            assert (await first.hit("alice")).refused == 2
            assert (await second.hit("alice")).refused == 3
            assert await first.hit("bob") == RateDecision(allowed=True)
            (window,) = await rows(url, "SELECT * FROM rate_windows WHERE user_id = 'alice'")
            assert (len(window["stamps"]), window["refused"]) == (3, 3)

    asyncio.run(scenario())


def test_concurrent_hits_from_many_connections_never_exceed_the_limit(url: str) -> None:
    limit, sent = 50, 200

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            processes = [
                await stack.enter_async_context(
                    process(url, pool_size=5, rate_limit_per_minute=limit)
                )
                for _ in range(4)
            ]
            decisions = await asyncio.gather(*(processes[n % 4].hit("alice") for n in range(sent)))
        assert sum(d.allowed for d in decisions) == limit
        # One at a time, each refusal one more in the streak: never two at once.
        assert sorted(d.refused for d in decisions if not d.allowed) == list(
            range(1, sent - limit + 1)
        )
        (window,) = await rows(url, "SELECT stamps FROM rate_windows")
        assert len(window["stamps"]) == limit
        assert window["stamps"] == sorted(window["stamps"])

    asyncio.run(scenario())


def test_the_window_slides_on_the_database_clock(url: str) -> None:
    async def scenario() -> None:
        async with process(url, rate_limit_per_minute=2) as limits:
            assert (await limits.hit("alice")).allowed
            # 40 s later on the database's clock (the process's own has not moved)...
            await shift_back(url, "alice", 40)
            assert (await limits.hit("alice")).allowed
            # ...the window is full, and its oldest message leaves it in 20 s.
            refused = await limits.hit("alice")
            assert (refused.allowed, refused.retry_after, refused.refused) == (False, 20, 1)
            # 20.5 s later it has left, the newer one has not: room for one message.
            await shift_back(url, "alice", 20.5)
            assert await limits.hit("alice") == RateDecision(allowed=True)
            refused = await limits.hit("alice")
            assert (refused.allowed, refused.retry_after, refused.refused) == (False, 40, 1)

    asyncio.run(scenario())


def test_a_heartbeat_forgets_the_windows_of_idle_users(url: str) -> None:
    async def scenario() -> None:
        async with process(url) as limits:
            await limits.hit("alice")
            await limits.hit("bob")
            await shift_back(url, "alice", 61)
            await limits.renew()
            assert [r["user_id"] for r in await rows(url, "SELECT * FROM rate_windows")] == ["bob"]
            assert await limits.hit("alice") == RateDecision(allowed=True)

    asyncio.run(scenario())


# Sockets per user --------------------------------------------------------------------------


def test_sockets_are_counted_across_processes(url: str) -> None:
    async def scenario() -> None:
        async with (
            process(url, max_sockets_per_user=3) as first,
            process(url, max_sockets_per_user=3) as second,
        ):
            assert await first.open_socket("alice", "a1")
            assert await second.open_socket("alice", "a2")
            assert await first.open_socket("alice", "a3")
            assert not await second.open_socket("alice", "a4")
            assert not await first.open_socket("alice", "a5")
            assert await second.open_socket("bob", "b1")
            assert (await first.count_sockets("alice"), await second.count_sockets("alice")) == (
                3, 3,
            )  # fmt: skip
            # Each process reports the sockets it holds itself.
            assert first.open_sockets() == {"alice": 2}
            assert second.open_sockets() == {"alice": 1, "bob": 1}
            # A socket closed on one process frees a slot for another.
            await first.close_socket("alice", "a1")
            assert await second.open_socket("alice", "a6")
            leases = await rows(url, "SELECT socket_id, user_id FROM socket_leases ORDER BY 1")
            assert [tuple(r) for r in leases] == [
                ("a2", "alice"), ("a3", "alice"), ("a6", "alice"), ("b1", "bob"),
            ]  # fmt: skip
            # Closing is scoped by the user: bob cannot end alice's socket.
            await second.close_socket("bob", "a2")
            assert await second.count_sockets("alice") == 3

    asyncio.run(scenario())


def test_concurrent_opens_never_take_more_than_the_limit(url: str) -> None:
    async def scenario() -> None:
        async with (
            process(url, pool_size=5, max_sockets_per_user=4) as first,
            process(url, pool_size=5, max_sockets_per_user=4) as second,
        ):
            counted = await asyncio.gather(
                *((first, second)[n % 2].open_socket("alice", f"s{n}") for n in range(20))
            )
            assert sum(counted) == 4
            assert await first.count_sockets("alice") == 4
            assert len(await rows(url, "SELECT * FROM socket_leases")) == 4

    asyncio.run(scenario())


def test_the_sockets_of_a_killed_process_stop_counting_when_their_leases_expire(
    url: str,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.limits_holder", url, "alice", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        holder_id = holder.stdout.readline().strip()
        assert holder_id

        async def expiries() -> list[Any]:
            leases = await rows(
                url, "SELECT expires_at FROM socket_leases WHERE process_id = $1", holder_id
            )
            return sorted(r["expires_at"] for r in leases)

        async def scenario() -> None:
            async with process(url, max_sockets_per_user=2) as limits:
                # While the holder lives, its heartbeats keep its sockets counted well past
                # their first lease (1 s).
                first = await expiries()
                assert len(first) == 2

                async def renewed_twice() -> bool:
                    now = await rows(url, "SELECT now() AS t")
                    return bool(now[0]["t"] > first[-1]) and (await expiries())[0] > first[-1]

                await wait_async(renewed_twice, "the holder to renew its leases")
                assert not await limits.open_socket("alice", "mine")
                holder.kill()
                holder.wait()
                # Dead (kill -9: nothing released), its leases run out and its slots free.
                for mine in ("mine-1", "mine-2"):
                    await wait_async(
                        lambda: limits.open_socket("alice", mine),  # noqa: B023
                        "the dead process's leases to expire",
                    )
                assert not await limits.open_socket("alice", "one-too-many")
                await limits.renew()
                leases = await rows(
                    url, "SELECT socket_id, process_id FROM socket_leases ORDER BY 1"
                )
                assert [tuple(r) for r in leases] == [
                    ("mine-1", limits.process_id), ("mine-2", limits.process_id),
                ]  # fmt: skip

        asyncio.run(scenario())
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


async def wait_async(condition: Any, what: str) -> None:
    """:func:`tests.conftest.wait_for` for a coroutine condition (30 s at most)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_the_heartbeat_renews_this_process_s_leases_and_puts_back_swept_ones(url: str) -> None:
    async def scenario() -> None:
        async with process(url, max_sockets_per_user=5) as limits, process(url) as other:
            assert await limits.open_socket("alice", "a1")
            assert await limits.open_socket("bob", "b1")
            assert await other.open_socket("carol", "c1")
            before = {
                r["socket_id"]: r["expires_at"]
                for r in await rows(url, "SELECT * FROM socket_leases")
            }
            await limits.renew()
            after = {
                r["socket_id"]: r["expires_at"]
                for r in await rows(url, "SELECT * FROM socket_leases")
            }
            assert after["a1"] > before["a1"] and after["b1"] > before["b1"]
            assert after["c1"] == before["c1"]  # another process's lease is its own
            # The database was away longer than a lease, and another process swept them.
            await rows(url, "DELETE FROM socket_leases WHERE process_id = $1", limits.process_id)
            await limits.renew()
            leases = await rows(url, "SELECT socket_id, user_id, process_id FROM socket_leases")
            assert sorted(tuple(r) for r in leases) == [
                ("a1", "alice", limits.process_id),
                ("b1", "bob", limits.process_id),
                ("c1", "carol", other.process_id),
            ]

    asyncio.run(scenario())


def test_a_lease_that_could_not_be_released_is_released_by_the_next_heartbeat(
    url: str,
) -> None:
    refuse_deletes = """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'the database refuses'; END $$;
        CREATE TRIGGER refuse BEFORE DELETE ON socket_leases
            FOR EACH ROW EXECUTE FUNCTION refuse();
    """

    async def scenario() -> None:
        async with process(url) as limits:
            assert await limits.open_socket("alice", "a1")
            assert await limits.open_socket("alice", "a2")
            await script(url, refuse_deletes)
            await limits.close_socket("alice", "a1")
            # Closed here, whatever the database said; its lease is not renewed.
            assert limits.open_sockets() == {"alice": 1}
            await rows(url, "DROP TRIGGER refuse ON socket_leases")
            await limits.renew()
            leases = await rows(url, "SELECT socket_id FROM socket_leases")
            assert [r["socket_id"] for r in leases] == ["a2"]

    asyncio.run(scenario())


def test_closing_releases_every_lease_of_the_process(url: str) -> None:
    async def scenario() -> None:
        async with process(url) as limits, process(url) as other:
            await limits.start()
            assert await limits.open_socket("alice", "a1")
            assert await limits.open_socket("alice", "a2")
            assert await other.open_socket("alice", "a3")
            await limits.aclose()
            assert limits.open_sockets() == {}
            assert await other.count_sockets("alice") == 1
            # A socket that ends after its process closed the limits changes nothing.
            await limits.close_socket("alice", "a1")
            assert await other.count_sockets("alice") == 1

    asyncio.run(scenario())


# When the database fails -------------------------------------------------------------------


def test_a_count_that_fails_refuses_the_message_or_the_socket_and_nothing_else(
    url: str, start_server: ServerFactory
) -> None:
    server = start_server(database_url=url)
    token = make_token("alice")

    def writes(allowed: bool) -> None:
        # Every write to the limits' tables fails while the constraint holds.
        for table in ("rate_windows", "socket_leases"):
            statement = (
                f"ALTER TABLE {table} DROP CONSTRAINT refuse_all"
                if allowed
                else f"ALTER TABLE {table} ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
            )
            run_sql(url, statement)

    with server.ws(token) as ws:
        session_id = recv_json(ws)["session_id"]
        writes(allowed=False)
        ws.send(json.dumps({"message": "lost", "id": "m1"}))
        assert recv_json(ws) == {
            "type": "error",
            "error": {
                "code": "internal_error",
                "message": "the server failed; send the message again later",
                "retryable": True,
            },
            "session_id": session_id,
            "reply_to": "m1",
        }
        with server.ws(token, session_id=session_id) as refused:
            assert expect_close(refused) == (1011, "internal error")
        # The socket that was open stays open, and works once the database does.
        writes(allowed=True)
        ws.send(json.dumps({"message": "again", "id": "m2"}))
        assert recv_json(ws)["message"] == "Echo: again"
        with server.ws(token, session_id=session_id) as second:
            second.send('{"type": "ping"}')
            assert recv_json(second) == {"type": "pong"}
    with server.http(token) as http:
        page = http.get(f"/api/sessions/{session_id}/messages").json()
    assert [m["content"] for m in page["messages"]] == ["again", "Echo: again"]
