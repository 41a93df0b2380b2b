"""Several server processes on one PostgreSQL database at once: migrations applied once,
the session cap kept, and the writes to one session ordered. Each "process" is a store with
a pool of its own (its own server connections), or a real ``chatbot migrate``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from chatbot.errors import DuplicateMessage, TooManySessions
from chatbot.stores.base import MessagePage, Session, UserMessage
from chatbot.stores.postgres import PostgresStore
from chatbot.stores.postgres_migrations import MIGRATION_LOCK, MIGRATIONS
from chatbot.transfer import ImportedSession
from tests.postgres import run_sql
from tests.processes import FOREIGN_PREFIXES

MIGRATION_NAMES = [name for name, _ in MIGRATIONS]


@contextlib.asynccontextmanager
async def open_stores(url: str, count: int) -> AsyncIterator[list[PostgresStore]]:
    """``count`` stores on ``url``, each with its own pool, as ``count`` processes."""
    stores = [PostgresStore(url, pool_size=4) for _ in range(count)]
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await store.open()
            stack.push_async_callback(store.close)
        yield stores


def test_stores_migrating_at_once_apply_each_migration_once(postgres_url: str) -> None:
    async def main() -> list[list[str]]:
        async with open_stores(postgres_url, 6) as stores:
            return list(await asyncio.gather(*(store.migrate() for store in stores)))

    results = asyncio.run(main())
    assert sorted(results) == [[]] * 5 + [MIGRATION_NAMES]
    rows = run_sql(postgres_url, "SELECT name FROM chatbot_migrations ORDER BY name")
    assert [row["name"] for row in rows] == MIGRATION_NAMES


def test_migrate_commands_started_together_apply_each_migration_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """Three ``chatbot migrate`` commands, held until all three wait for the migration lock
    at once, then let go together: one applies the migration, the others find it done."""
    name = "t_migrate_" + secrets.token_hex(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env["CHATBOT_DATABASE_URL"] = f"{postgres_url}&application_name={name}"

    async def main() -> list[tuple[int | None, str, str]]:
        holder = await asyncpg.connect(postgres_url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            commands = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "chatbot",
                    "migrate",
                    cwd=tmp_path,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                for _ in range(3)
            ]
            waiting = (
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = $1"
            )
            deadline = time.monotonic() + 60
            while await holder.fetchval(waiting, name) < 3:
                assert all(c.returncode is None for c in commands), "a command ended early"
                assert time.monotonic() < deadline, "the commands never all waited"
                await asyncio.sleep(0.02)
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        finally:
            await holder.close()
        outcomes = []
        for command in commands:
            out, err = await asyncio.wait_for(command.communicate(), 60)
            outcomes.append((command.returncode, out.decode(), err.decode()))
        return outcomes

    outcomes = asyncio.run(main())
    assert sorted(outcomes) == [
        (0, "".join(f"applied {name}\n" for name in MIGRATION_NAMES), ""),
        (0, "the database is up to date\n", ""),
        (0, "the database is up to date\n", ""),
    ]
    rows = run_sql(postgres_url, "SELECT name FROM chatbot_migrations")
    assert [row["name"] for row in rows] == MIGRATION_NAMES


def test_the_session_cap_holds_across_processes(postgres_url: str) -> None:
    """Creates and imports from four processes at once, for one user, never take them past
    the cap; another user's sessions are counted apart."""
    empty = ImportedSession(
        title=None, backend=None, model=None, system_prompt=None,
        created_at=datetime(2024, 3, 1, tzinfo=UTC), messages=(), leaf_key=None,
    )  # fmt: skip

    async def main() -> tuple[list[object], list[object], int, int]:
        async with open_stores(postgres_url, 4) as stores:
            await stores[0].migrate()
            creates = [
                stores[n % 4].create_session(owner, backend="echo", limit=5)
                for n in range(24)
                for owner in ("alice", "bob")
            ]
            imports = [
                stores[n].import_sessions("alice", [empty, empty], backend="echo", limit=5)
                for n in range(4)
            ]
            outcomes = await asyncio.gather(*creates, *imports, return_exceptions=True)
            counts = [await stores[0].count_sessions(owner) for owner in ("alice", "bob")]
            return outcomes[: len(creates)], outcomes[len(creates) :], *counts

    created, imported, alice, bob = asyncio.run(main())
    refused = [o for o in created + imported if isinstance(o, TooManySessions)]
    assert len(refused) + sum(not isinstance(o, BaseException) for o in created + imported) == 52
    assert not [o for o in created + imported if isinstance(o, Exception) and o not in refused]
    assert (alice, bob) == (5, 5)
    made = sum(1 for o in created if not isinstance(o, BaseException))
    made += sum(len(o) for o in imported if isinstance(o, list))
    assert made == 10


def test_writes_to_one_session_from_several_processes_form_one_branch(
    postgres_url: str,
) -> None:
    """The session's row lock orders the writes: each sees the leaf the one before it
    left, so forty messages sent at once from four processes make one branch. A client id
    sent from all four at once is stored once."""

    async def main() -> tuple[list[UserMessage], list[object], MessagePage, Session]:
        async with open_stores(postgres_url, 4) as stores:
            await stores[0].migrate()
            sid = (await stores[0].create_session("alice", backend="echo")).id
            adds = [
                stores[n % 4].add_user_message("alice", sid, content=f"m{n}") for n in range(40)
            ]
            added = list(await asyncio.gather(*adds))
            same = [
                store.add_user_message("alice", sid, content="once", client_id="same")
                for store in stores
            ]
            repeated = list(await asyncio.gather(*same, return_exceptions=True))
            page = await stores[1].list_messages("alice", sid, limit=100)
            return added, repeated, page, await stores[2].get_session("alice", sid)

    added, repeated, page, session = asyncio.run(main())
    chain = page.messages
    assert len(chain) == 41
    assert [m.parent_id for m in chain] == [None] + [m.id for m in chain[:-1]]
    assert sorted(m.message.content for m in added) == sorted(f"m{n}" for n in range(40))
    leaf_before = {m.message.id: m.leaf_before for m in added}
    assert [leaf_before[m.id] for m in chain[:40]] == [None] + [m.id for m in chain[:39]]
    stored = [r for r in repeated if isinstance(r, UserMessage)]
    duplicates = [r for r in repeated if isinstance(r, DuplicateMessage)]
    assert len(stored) == 1 and len(duplicates) == 3
    assert all(d.message == stored[0].message for d in duplicates)
    assert session.message_count == 41
    assert session.leaf_id == chain[-1].id == stored[0].message.id
