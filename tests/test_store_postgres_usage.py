"""The PostgreSQL store's usage ledger beyond the contract: the migration that backfills it
from the replies already stored."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

from chatbot.stores.postgres import PostgresStore
from chatbot.stores.postgres_migrations import MIGRATIONS
from chatbot.stores.usage import QuotaState, UsageRow
from tests.postgres import run_sql
from tests.store_contract import open_store

WIDE = {"start": date(2000, 1, 1), "end": date(2100, 1, 1)}
NAMES = [name for name, _ in MIGRATIONS]


def _database_before_the_ledger(url: str, replies: list[tuple[Any, ...]]) -> None:
    """The schema migrated up to the migration before 0004_usage, holding ``replies``:
    ``(owner, created_at, backend, model, usage)``, each answering a question."""
    import asyncpg

    before = NAMES.index("0004_usage")

    async def build() -> None:
        db = await asyncpg.connect(url)
        try:
            await db.execute(
                "CREATE TABLE chatbot_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for name, script in MIGRATIONS[:before]:
                await db.execute(script)
                await db.execute("INSERT INTO chatbot_migrations (name) VALUES ($1)", name)
            for owner in ("alice", "bob"):
                await db.execute(
                    "INSERT INTO sessions (id, owner, backend, created_at, updated_at) "
                    "VALUES ($1, $2, 'echo', now(), now())",
                    f"s-{owner}", owner,
                )  # fmt: skip
            for owner, created_at, backend, model, usage in replies:
                text = None if usage is None else json.dumps(usage)
                question = await db.fetchval(
                    "INSERT INTO messages (session_id, role, content, status, created_at, "
                    "usage, search_vector) VALUES ($1, 'user', 'q', 'complete', "
                    "$2::text::timestamptz, $3::text::jsonb, ''::tsvector) RETURNING id",
                    f"s-{owner}", created_at, text,
                )  # fmt: skip
                await db.execute(
                    "INSERT INTO messages (session_id, role, content, status, reply_to, "
                    "backend, model, usage, created_at, search_vector) VALUES ($1, "
                    "'assistant', 'a', 'complete', $2, $3, $4, $5::text::jsonb, "
                    "$6::text::timestamptz, ''::tsvector)",
                    f"s-{owner}", question, backend, model, text, created_at,
                )  # fmt: skip
        finally:
            await db.close()

    asyncio.run(build())


def test_the_ledger_is_backfilled_from_the_replies_already_stored(postgres_url: str) -> None:
    _database_before_the_ledger(
        postgres_url,
        [
            ("alice", "2026-03-01T10:00:00Z", "echo", "echo",
             {"input_tokens": 3, "output_tokens": 4}),
            ("alice", "2026-03-01T23:59:59.999999Z", "echo", "echo",
             {"input_tokens": 10, "output_tokens": 20}),
            # Written with another offset: filed under its UTC day.
            ("alice", "2026-03-01T23:30:00-02:00", "gpt", None, {"output_tokens": 7}),
            # Nothing to count.
            ("alice", "2026-03-02T08:00:00Z", "echo", "echo", None),
            ("alice", "2026-03-02T08:00:00Z", "echo", "echo", {"cached_tokens": 5}),
            ("alice", "2026-03-02T08:00:00Z", "echo", "echo",
             {"input_tokens": -1, "output_tokens": 1.5}),
            ("alice", "2026-03-02T08:00:00Z", "echo", "echo", [1, 2]),
            ("alice", "2026-03-02T08:00:00Z", "echo", "echo", "not an object"),
            # One good count is enough; the other counts as 0.
            ("alice", "2026-03-02T09:00:00Z", "echo", "echo",
             {"input_tokens": 5, "output_tokens": True}),
            ("bob", "2026-03-01T12:00:00Z", "echo", "echo",
             {"input_tokens": 100, "output_tokens": 200}),
        ],
    )  # fmt: skip

    with open_store(PostgresStore(postgres_url), migrations=NAMES) as store:
        assert store.first_migrate == ["0004_usage"]
        assert store.usage("alice", group_by="day", **WIDE) == [
            UsageRow(13, 24, 2, day=date(2026, 3, 1)),
            UsageRow(5, 7, 2, day=date(2026, 3, 2)),
        ]
        assert store.usage("alice", group_by="model", **WIDE) == [
            UsageRow(18, 24, 3, backend="echo", model="echo"),
            UsageRow(0, 7, 1, backend="gpt", model=None),
        ]
        assert store.usage("bob", group_by="backend", **WIDE) == [
            UsageRow(100, 200, 1, backend="echo")
        ]
        assert store.quota_state("alice", date(2026, 3, 31), applies=True) == QuotaState(
            None, 0, 49
        )
    rows = run_sql(postgres_url, "SELECT sum(replies)::int AS replies FROM usage_totals")
    assert rows[0]["replies"] == 5
